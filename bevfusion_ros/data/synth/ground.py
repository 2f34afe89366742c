"""The ground of a scene as rasters over its region: colour (RGB), semantic class and LiDAR material.

The camera renderer looks the ground up per pixel (ground-plane intersection), the ray caster per point.
Painted markings (centre lines, lane lines, edge lines, zebra crossings, stop lines, parking stalls) are
driveable surface in the class raster (as in nuScenes-lidarseg) but paint in the material raster.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bevfusion_ros.data.synth import semantics as sem
from bevfusion_ros.data.synth.maps import MapGeometry, marking_intervals
from bevfusion_ros.data.synth.world import City, _road_rect

RESOLUTION = 0.1          # metres per raster cell
COARSE_FACTOR = 4         # the far-field (mip) raster is this much coarser

ASPHALT = (78, 78, 82)
SIDEWALK = (168, 164, 156)
FLAT_OTHER = (150, 138, 118)
GRASS = (82, 120, 58)
WHITE = (225, 225, 220)
YELLOW = (225, 185, 40)


@dataclass
class GroundRaster:
    origin: np.ndarray        # world xy of cell (0, 0)'s corner
    resolution: float
    color: np.ndarray         # H, W, 3 uint8 RGB (row = y, column = x)
    cls: np.ndarray           # H, W uint8 lidarseg index
    material: np.ndarray      # H, W uint8
    coarse_color: np.ndarray  # far-field mip level

    def cells(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) float cell coordinates of world points [N, 2]."""
        rc = (xy - self.origin) / self.resolution
        return rc[:, 1], rc[:, 0]

    def lookup(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class, material) at world points [N, 2] (nearest cell; outside: flat.other)."""
        rows, cols = self.cells(xy)
        r = np.floor(rows).astype(np.int64)
        c = np.floor(cols).astype(np.int64)
        inside = (r >= 0) & (c >= 0) & (r < self.cls.shape[0]) & (c < self.cls.shape[1])
        cls = np.full(len(xy), sem.FLAT_OTHER, np.uint8)
        mat = np.full(len(xy), sem.MAT_FLAT_OTHER, np.uint8)
        cls[inside] = self.cls[r[inside], c[inside]]
        mat[inside] = self.material[r[inside], c[inside]]
        return cls, mat


def _noise_tile(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    fine = rng.normal(0, 1, (size, size)).astype(np.float32)
    coarse = cv2.resize(rng.normal(0, 1, (size // 32, size // 32)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(fine, (0, 0), 0.8) * 5.0 + coarse * 7.0


def build_ground(city: City, geom: MapGeometry, bounds: tuple[float, float, float, float], seed: int) -> GroundRaster:
    """Rasterize the ground over `bounds` (x0, y0, x1, y1), world metres."""
    x0, y0, x1, y1 = bounds
    origin = np.array([x0, y0])
    width = int(np.ceil((x1 - x0) / RESOLUTION))
    height = int(np.ceil((y1 - y0) / RESOLUTION))
    color = np.empty((height, width, 3), np.uint8)
    color[:] = FLAT_OTHER
    cls = np.full((height, width), sem.FLAT_OTHER, np.uint8)
    mat = np.full((height, width), sem.MAT_FLAT_OTHER, np.uint8)

    def px(poly: np.ndarray) -> np.ndarray:
        return np.round((np.asarray(poly) - origin) / RESOLUTION * 16).astype(np.int32)

    def fill(polys, rgb, klass, material):
        polys = [px(p) for p in polys]
        if not polys:
            return
        cv2.fillPoly(color, polys, rgb, shift=4)
        cv2.fillPoly(cls, polys, int(klass), shift=4)
        cv2.fillPoly(mat, polys, int(material), shift=4)

    def paint(polys, rgb, material):
        polys = [px(p) for p in polys]
        if polys:
            cv2.fillPoly(color, polys, rgb, shift=4)
            cv2.fillPoly(mat, polys, int(material), shift=4)

    # Sidewalk rings, then what the blocks hold, then roads and car parks on top.
    fill([w[0] for w in geom.walkways], SIDEWALK, sem.SIDEWALK, sem.MAT_CONCRETE)
    for block in city.blocks:
        bx0, by0, bx1, by1 = block.rect
        rect = np.array([[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]])
        if block.kind == "park":
            fill([rect], GRASS, sem.TERRAIN, sem.MAT_GRASS)
        else:
            fill([rect], FLAT_OTHER, sem.FLAT_OTHER, sem.MAT_FLAT_OTHER)
    fill(geom.drivable, ASPHALT, sem.DRIVEABLE, sem.MAT_ASPHALT)

    # Markings.
    centre = YELLOW if city.side > 0 else WHITE
    lines_solid, lines_centre, dashes = [], [], []
    for road in city.roads:
        for a0, a1 in marking_intervals(city, road):
            for offset in ((-0.12, 0.12) if city.side > 0 else (0.0,)):
                lines_centre.append(_road_rect(road, a0, a1, offset - 0.06, offset + 0.06))
            if road.strip != "none":
                for sign in (-1, 1):
                    lat = sign * road.lanes_half
                    lines_solid.append(_road_rect(road, a0, a1, lat - 0.07, lat + 0.07))
            if road.lanes == 2:
                for sign in (-1, 1):
                    lat = sign * road.lane_width
                    a = a0
                    while a < a1 - 3.0:
                        dashes.append(_road_rect(road, a, a + 3.0, lat - 0.07, lat + 0.07))
                        a += 9.0
    paint(lines_centre, centre, sem.MAT_PAINT)
    paint(lines_solid + dashes, WHITE, sem.MAT_PAINT)
    zebra = []
    for crossing in city.crossings:
        road = crossing["road"]
        along = road.direction
        poly = crossing["poly"]
        a_vals = poly @ along
        a0, a1 = a_vals.min(), a_vals.max()
        lat = -road.half + 0.3
        while lat < road.half - 0.5:
            zebra.append(_road_rect(road, a0, a1, lat, lat + 0.5))
            lat += 1.0
    paint(zebra, WHITE, sem.MAT_ZEBRA)
    paint([s["poly"] for s in city.stop_lines], WHITE, sem.MAT_PAINT)
    stalls = []
    for poly in city.carparks:
        px0, py0 = poly.min(0)
        px1, py1 = poly.max(0)
        row_y = py0 + 3.0
        while row_y < py1 - 3.0:
            x = px0 + 1.5 - 1.35
            while x < px1 - 1.5:
                stalls.append(np.array([[x - 0.05, row_y - 2.5], [x + 0.05, row_y - 2.5],
                                        [x + 0.05, row_y + 2.5], [x - 0.05, row_y + 2.5]]))
                x += 2.7
            row_y += 7.5 if (row_y - py0) % 15 < 7 else 5.5
    paint(stalls, WHITE, sem.MAT_PAINT)

    # Texture: brightness noise, stronger on grass.
    rng = np.random.default_rng(seed)
    tile = _noise_tile(rng)
    reps = (int(np.ceil(height / tile.shape[0])), int(np.ceil(width / tile.shape[1])))
    noise = np.tile(tile, reps)[:height, :width]
    noise[cls == sem.TERRAIN] *= 2.0
    color = np.clip(color.astype(np.float32) + noise[..., None], 0, 255).astype(np.uint8)
    coarse = cv2.resize(color, (max(1, width // COARSE_FACTOR), max(1, height // COARSE_FACTOR)),
                        interpolation=cv2.INTER_AREA)
    return GroundRaster(origin=origin, resolution=RESOLUTION, color=color, cls=cls, material=mat,
                        coarse_color=coarse)
