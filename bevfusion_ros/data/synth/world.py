"""The static world of one map location: a grid city of roads, sidewalks, crossings, car parks, parks,
buildings, street furniture and trees.

Each of the devkit's four map locations gets one city, generated deterministically from the location name
alone (never from a dataset seed): every scene in that location, of any dataset, drives the same streets,
so the one map-expansion JSON per location the devkit reads is consistent with every scene, as in the
real nuScenes. Coordinates are global metres (x east, y north), inside the devkit's map canvas.

Road cross-section (from the centre line outwards, both sides): travel lanes (1-2 per direction, 3.2-3.6 m)
-> optional curb strip (parking lane 2.6 m, bike lane 1.8 m, or none) -> sidewalk (3-4.5 m) -> the
block. The centre line between the two directions is a `road_divider`, lines between lanes of one
direction are `lane_divider`s. Boston drives on the right, Singapore on the left.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from bevfusion_ros.data.synth import semantics as sem

# Devkit map canvases (metres); NuScenesMap.get_map_mask hard-codes these per location.
MAP_DIMS: dict[str, tuple[float, float]] = {
    "singapore-onenorth": (1585.6, 2025.0),
    "singapore-hollandvillage": (2808.3, 2922.9),
    "singapore-queenstown": (3228.6, 3687.1),
    "boston-seaport": (2979.5, 2118.1),
}
LOCATIONS: tuple[str, ...] = tuple(MAP_DIMS)
CITY_ORIGIN = (250.0, 250.0)   # south-west corner of the road grid
CITY_SIZE = 1200.0             # square city, metres
LANE_WIDTH_RANGE = (3.2, 3.6)
CROSSING_GAP = 0.3             # metres between the cross road's curb and a zebra crossing


def drive_side(location: str) -> int:
    """+1: traffic keeps right (Boston); -1: keeps left (Singapore)."""
    return 1 if location.startswith("boston") else -1


@dataclass
class Road:
    """A straight road across the whole city. axis 0: runs along x at y = pos; axis 1: along y at x = pos."""

    axis: int
    pos: float
    lanes: int            # travel lanes per direction
    lane_width: float
    strip: str            # "parking" | "bike" | "none"
    strip_width: float
    sidewalk: float
    street_trees: bool

    @property
    def lanes_half(self) -> float:
        """Centre line to the outer edge of the travel lanes."""
        return self.lanes * self.lane_width

    @property
    def half(self) -> float:
        """Centre line to the curb (travel lanes + strip): half the drivable width."""
        return self.lanes_half + self.strip_width

    @property
    def direction(self) -> np.ndarray:
        return np.array([1.0, 0.0]) if self.axis == 0 else np.array([0.0, 1.0])

    @property
    def normal(self) -> np.ndarray:
        """Left normal of +direction."""
        return np.array([0.0, 1.0]) if self.axis == 0 else np.array([-1.0, 0.0])

    def point(self, along: float, lateral: float) -> np.ndarray:
        """World xy of (distance along +direction measured from the axis origin, offset along normal)."""
        base = np.array([along, self.pos]) if self.axis == 0 else np.array([self.pos, along])
        return base + lateral * self.normal

    def lane_offset(self, direction: int, lane: int, side: int) -> float:
        """Lateral offset (along `normal`) of the centre of travel lane `lane` (0 = next to the centre line)
        for traffic moving along `direction` (+1/-1) times +direction, keeping to `side` (+1 right)."""
        return -direction * side * (lane + 0.5) * self.lane_width

    def strip_offset(self, direction: int, side: int) -> float:
        """Lateral offset of the centre of the curb strip on the side of `direction` traffic."""
        return -direction * side * (self.lanes_half + self.strip_width / 2.0)

    def sidewalk_offset(self, sign: int, frac: float = 0.5) -> float:
        """Lateral offset of a line on the sidewalk on the `sign` (+1 left/-1 right of +direction) side,
        frac 0 at the curb, 1 at the block edge."""
        return sign * (self.half + frac * self.sidewalk)


@dataclass
class StaticSet:
    """Static solids: upright boxes [x, y, z_centre, l, w, h, yaw] with class, material and colour."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    material: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    color: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))

    def select(self, mask: np.ndarray) -> "StaticSet":
        return StaticSet(self.boxes[mask], self.cls[mask], self.material[mask], self.color[mask])


class _StaticBuilder:
    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, x, y, zc, length, width, height, yaw, cls, material, color):
        self.rows.append(((x, y, zc, length, width, height, yaw), cls, material, tuple(int(c) for c in color)))

    def build(self) -> StaticSet:
        if not self.rows:
            return StaticSet()
        return StaticSet(np.array([r[0] for r in self.rows], np.float64), np.array([r[1] for r in self.rows], np.uint8),
                         np.array([r[2] for r in self.rows], np.uint8), np.array([r[3] for r in self.rows], np.uint8))


@dataclass
class Block:
    """The land between four roads, inside the sidewalks: [x0, y0, x1, y1] and what it holds."""

    rect: tuple[float, float, float, float]
    kind: str             # "buildings" | "carpark" | "park" | "plaza"
    outer: tuple[float, float, float, float]   # block incl. sidewalks (curb to curb)


@dataclass
class City:
    location: str
    side: int                          # +1 keep right, -1 keep left
    bounds: tuple[float, float, float, float]
    roads: list[Road]                  # axis-0 roads then axis-1 roads, each sorted by pos
    blocks: list[Block]
    crossings: list[dict]              # {poly, road, cross, arm}
    stop_lines: list[dict]             # {poly, crossing (index), road, arm}
    carparks: list[np.ndarray]         # polygons
    statics: StaticSet

    def roads_of_axis(self, axis: int) -> list[Road]:
        return [r for r in self.roads if r.axis == axis]


def _rect(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _road_rect(road: Road, a0: float, a1: float, l0: float, l1: float) -> np.ndarray:
    """Polygon of the road-aligned rectangle along [a0, a1] x lateral [l0, l1]."""
    pts = [road.point(a0, l0), road.point(a1, l0), road.point(a1, l1), road.point(a0, l1)]
    return np.array(pts)


def build_city(location: str) -> City:
    if location not in MAP_DIMS:
        raise ValueError(f"unknown map location {location!r}; expected one of {LOCATIONS}")
    rng = np.random.default_rng(zlib.crc32(location.encode()))
    x0, y0 = CITY_ORIGIN
    bounds = (x0, y0, x0 + CITY_SIZE, y0 + CITY_SIZE)
    side = drive_side(location)

    roads: list[Road] = []
    for axis in (0, 1):
        lo, hi = (bounds[1], bounds[3]) if axis == 0 else (bounds[0], bounds[2])
        pos = lo + 40.0
        while pos < hi - 40.0:
            lanes = int(rng.choice([1, 2], p=[0.45, 0.55]))
            strip = str(rng.choice(["parking", "bike", "none"], p=[0.55, 0.2, 0.25]))
            roads.append(Road(axis=axis, pos=float(pos), lanes=lanes,
                              lane_width=float(rng.uniform(*LANE_WIDTH_RANGE)), strip=strip,
                              strip_width={"parking": 2.6, "bike": 1.8, "none": 0.0}[strip],
                              sidewalk=float(rng.uniform(3.0, 4.5)), street_trees=bool(rng.random() < 0.5)))
            pos += float(rng.uniform(85.0, 135.0))
    ax0 = [r for r in roads if r.axis == 0]
    ax1 = [r for r in roads if r.axis == 1]

    builder = _StaticBuilder()
    blocks: list[Block] = []
    carparks: list[np.ndarray] = []
    for i in range(len(ax1) - 1):
        for j in range(len(ax0) - 1):
            west, east, south, north = ax1[i], ax1[i + 1], ax0[j], ax0[j + 1]
            outer = (west.pos + west.half, south.pos + south.half, east.pos - east.half, north.pos - north.half)
            rect = (outer[0] + west.sidewalk, outer[1] + south.sidewalk,
                    outer[2] - east.sidewalk, outer[3] - north.sidewalk)
            kind = str(rng.choice(["buildings", "carpark", "park", "plaza"], p=[0.55, 0.13, 0.14, 0.18]))
            block = Block(rect=rect, kind=kind, outer=outer)
            blocks.append(block)
            _fill_block(block, rng, builder, carparks)

    crossings, stop_lines = _crossings(roads, side, rng)
    _street_furniture(roads, bounds, rng, builder)
    return City(location=location, side=side, bounds=bounds, roads=roads, blocks=blocks, crossings=crossings,
                stop_lines=stop_lines, carparks=carparks, statics=builder.build())


def _crossings(roads: list[Road], side: int, rng) -> tuple[list[dict], list[dict]]:
    crossings, stop_lines = [], []
    for road in roads:
        for cross in (r for r in roads if r.axis != road.axis):
            for arm in (-1, 1):
                if rng.random() > 0.75:
                    continue
                width = min(cross.sidewalk, 4.0)
                a0 = cross.pos + arm * (cross.half + CROSSING_GAP)
                a1 = a0 + arm * width
                poly = _road_rect(road, min(a0, a1), max(a0, a1), -road.half, road.half)
                crossings.append({"poly": poly, "road": road, "cross": cross, "arm": arm})
                # Stop line for the traffic approaching the crossing on this arm (moving along -arm).
                s0 = a1 + arm * 1.0
                s1 = s0 + arm * 0.4
                lat = road.lane_offset(-arm, 0, side)
                l_in, l_out = sorted((0.0, np.sign(lat) * road.lanes_half))
                stop_lines.append({"poly": _road_rect(road, min(s0, s1), max(s0, s1), l_in, l_out),
                                   "crossing": len(crossings) - 1, "road": road, "arm": arm})
    return crossings, stop_lines


BUILDING_COLORS = np.array([[180, 170, 160], [150, 140, 135], [200, 190, 175], [120, 110, 105], [170, 175, 185],
                            [140, 120, 100], [190, 160, 130], [110, 120, 130], [215, 210, 200], [160, 100, 80]])


def _fill_block(block: Block, rng, builder: _StaticBuilder, carparks: list) -> None:
    x0, y0, x1, y1 = block.rect
    if x1 - x0 < 15 or y1 - y0 < 15:
        block.kind = "plaza"
        return
    if block.kind == "carpark":
        carparks.append(_rect(x0 + 1.0, y0 + 1.0, x1 - 1.0, y1 - 1.0))
        return
    if block.kind in ("park", "plaza"):
        n_trees = int((x1 - x0) * (y1 - y0) / (150.0 if block.kind == "park" else 600.0))
        for _ in range(n_trees):
            _tree(builder, rng, rng.uniform(x0 + 2, x1 - 2), rng.uniform(y0 + 2, y1 - 2))
        if block.kind == "park":
            for (ax, ay, bx, by) in ((x0, y0, x1, y0), (x0, y1, x1, y1)):
                builder.add((ax + bx) / 2, ay + (0.6 if ay == y0 else -0.6), 0.5, bx - ax - 6, 0.8, 1.0, 0.0,
                            sem.VEGETATION, sem.MAT_VEGETATION, (60, 110, 50))
        else:
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            length, width = (x1 - x0) * rng.uniform(0.25, 0.45), (y1 - y0) * rng.uniform(0.25, 0.45)
            _building(builder, rng, cx, cy, length, width, 0.0)
        return
    # Buildings along the four edges of the block.
    max_depth = min(22.0, (y1 - y0) / 2 - 1, (x1 - x0) / 2 - 1)
    for edge in range(4):
        if edge in (0, 1):        # south / north edges run along x
            a_lo, a_hi, fixed, inward = x0, x1, (y0 if edge == 0 else y1), (1 if edge == 0 else -1)
        else:                     # west / east edges run along y, shortened to avoid the corners
            a_lo, a_hi, fixed, inward = y0 + max_depth, y1 - max_depth, (x0 if edge == 2 else x1), \
                (1 if edge == 2 else -1)
        a = a_lo
        while a < a_hi - 6:
            width = min(float(rng.uniform(10, 35)), a_hi - a)
            if rng.random() > 0.12:
                depth = float(rng.uniform(10, max(10.5, max_depth)))
                setback = float(rng.uniform(0.3, 3.0))
                centre_fixed = fixed + inward * (setback + depth / 2)
                if edge in (0, 1):
                    _building(builder, rng, a + width / 2, centre_fixed, width - 0.4, depth, 0.0)
                else:
                    _building(builder, rng, centre_fixed, a + width / 2, depth, width - 0.4, 0.0)
            a += width


def _building(builder, rng, cx, cy, length, width, yaw):
    height = float(rng.choice([rng.uniform(5, 12), rng.uniform(12, 40)], p=[0.6, 0.4]))
    color = BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))] + rng.integers(-15, 16, 3)
    builder.add(cx, cy, height / 2, length, width, height, yaw, sem.MANMADE, sem.MAT_BUILDING,
                np.clip(color, 0, 255))


def _tree(builder, rng, x, y, trunk=(2.6, 3.6), crown=(2.5, 5.0)):
    trunk_h = float(rng.uniform(*trunk))
    builder.add(x, y, trunk_h / 2, 0.35, 0.35, trunk_h, 0.0, sem.VEGETATION, sem.MAT_VEGETATION, (85, 65, 45))
    crown = float(rng.uniform(*crown))
    crown_h = float(rng.uniform(2.5, 4.5))
    green = np.array([55, 105, 45]) + rng.integers(-15, 16, 3)
    for yaw in (0.0, np.pi / 4):
        builder.add(x, y, trunk_h + crown_h / 2 - 0.3, crown, crown, crown_h, yaw, sem.VEGETATION,
                    sem.MAT_VEGETATION, np.clip(green, 0, 255))


def _street_furniture(roads: list[Road], bounds, rng, builder: _StaticBuilder) -> None:
    """Street lights and street trees in the furniture zone next to the curb, away from intersections."""
    for road in roads:
        crosses = [r for r in roads if r.axis != road.axis]
        lo, hi = (bounds[0], bounds[2]) if road.axis == 0 else (bounds[1], bounds[3])

        def clear(a: float) -> bool:
            return all(abs(a - c.pos) > c.half + c.sidewalk + 6.0 for c in crosses)

        for sign in (-1, 1):
            a = lo + float(rng.uniform(0, 30))
            while a < hi:
                if clear(a):
                    p = road.point(a, road.sidewalk_offset(sign, 0.25))
                    builder.add(p[0], p[1], 3.75, 0.25, 0.25, 7.5, 0.0, sem.MANMADE, sem.MAT_POLE, (95, 95, 100))
                a += float(rng.uniform(25, 40))
            if road.street_trees:
                a = lo + float(rng.uniform(0, 15))
                while a < hi:
                    if clear(a) and rng.random() < 0.8:
                        p = road.point(a, road.sidewalk_offset(sign, 0.3))
                        _tree(builder, rng, p[0], p[1], trunk=(3.4, 4.4), crown=(2.5, 3.8))
                    a += float(rng.uniform(10, 18))


_CITY_CACHE: dict[str, City] = {}


def city_for(location: str) -> City:
    """The (cached) city of a location."""
    if location not in _CITY_CACHE:
        _CITY_CACHE[location] = build_city(location)
    return _CITY_CACHE[location]
