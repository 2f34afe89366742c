"""Map layers of a city, written as the nuScenes map expansion (``maps/expansion/<location>.json``, v1.3
schema as the devkit's NuScenesMap reads it) and as the semantic-prior PNG the ``map`` table points to.

Layers: drivable_area (roads + car parks), road_segment (segments between intersections, and the
intersections), lane (travel lanes), ped_crossing, walkway (per block, a ring with a hole), stop_line
(type PED_CROSSING, cued by its crossing), carpark_area, road_divider (centre lines), lane_divider (between
lanes of one direction), plus the polygon/line/node tables behind them. traffic_light, lane_connector,
arcline_path_3 and connectivity are present and empty.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bevfusion_ros.data.synth.world import CROSSING_GAP, MAP_DIMS, City, Road, _road_rect

MAP_VERSION = "1.3"
PRIOR_RESOLUTION = 0.1     # m per pixel of the semantic-prior PNG (the devkit's MapMask assumes 10 px/m)


@dataclass
class MapGeometry:
    drivable: list[np.ndarray] = field(default_factory=list)
    road_segments: list[tuple[np.ndarray, bool]] = field(default_factory=list)   # (poly, is_intersection)
    lanes: list[np.ndarray] = field(default_factory=list)
    ped_crossings: list[np.ndarray] = field(default_factory=list)
    walkways: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (outer, hole)
    stop_lines: list[tuple[np.ndarray, int]] = field(default_factory=list)       # (poly, crossing index)
    carparks: list[np.ndarray] = field(default_factory=list)
    road_dividers: list[np.ndarray] = field(default_factory=list)                 # polylines
    lane_dividers: list[np.ndarray] = field(default_factory=list)


def road_intervals(city: City, road: Road) -> list[tuple[float, float]]:
    """Along-road intervals of `road` between intersections (curb to curb of the cross roads)."""
    lo, hi = (city.bounds[0], city.bounds[2]) if road.axis == 0 else (city.bounds[1], city.bounds[3])
    cuts = sorted((c.pos - c.half, c.pos + c.half) for c in city.roads if c.axis != road.axis)
    out, cursor = [], lo
    for c0, c1 in cuts:
        if c0 > cursor:
            out.append((cursor, c0))
        cursor = max(cursor, c1)
    if cursor < hi:
        out.append((cursor, hi))
    return out


def marking_intervals(city: City, road: Road) -> list[tuple[float, float]]:
    """Along-road intervals where road lines are painted: between the stop-line zones of intersections."""
    lo, hi = (city.bounds[0], city.bounds[2]) if road.axis == 0 else (city.bounds[1], city.bounds[3])
    cuts = sorted((c.pos - c.half - CROSSING_GAP - 6.0, c.pos + c.half + CROSSING_GAP + 6.0)
                  for c in city.roads if c.axis != road.axis)
    out, cursor = [], lo
    for c0, c1 in cuts:
        if c0 > cursor + 1.0:
            out.append((cursor, c0))
        cursor = max(cursor, c1)
    if cursor < hi - 1.0:
        out.append((cursor, hi))
    return out


def map_geometry(city: City) -> MapGeometry:
    geom = MapGeometry()
    for road in city.roads:
        lo, hi = (city.bounds[0], city.bounds[2]) if road.axis == 0 else (city.bounds[1], city.bounds[3])
        geom.drivable.append(_road_rect(road, lo, hi, -road.half, road.half))
        for a0, a1 in road_intervals(city, road):
            geom.road_segments.append((_road_rect(road, a0, a1, -road.half, road.half), False))
            for k in range(road.lanes):
                for sign in (-1, 1):
                    l0, l1 = sorted((sign * k * road.lane_width, sign * (k + 1) * road.lane_width))
                    geom.lanes.append(_road_rect(road, a0, a1, l0, l1))
        for a0, a1 in marking_intervals(city, road):
            geom.road_dividers.append(np.array([road.point(a0, 0.0), road.point(a1, 0.0)]))
            if road.lanes == 2:
                for sign in (-1, 1):
                    lat = sign * road.lane_width
                    geom.lane_dividers.append(np.array([road.point(a0, lat), road.point(a1, lat)]))
    for road in city.roads_of_axis(0):
        for cross in city.roads_of_axis(1):
            geom.road_segments.append((np.array([[cross.pos - cross.half, road.pos - road.half],
                                                 [cross.pos + cross.half, road.pos - road.half],
                                                 [cross.pos + cross.half, road.pos + road.half],
                                                 [cross.pos - cross.half, road.pos + road.half]]), True))
    geom.drivable.extend(city.carparks)
    geom.carparks = list(city.carparks)
    geom.ped_crossings = [c["poly"] for c in city.crossings]
    geom.stop_lines = [(s["poly"], s["crossing"]) for s in city.stop_lines]
    for block in city.blocks:
        x0, y0, x1, y1 = block.outer
        hx0, hy0, hx1, hy1 = block.rect
        outer = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        hole = np.array([[hx0, hy0], [hx1, hy0], [hx1, hy1], [hx0, hy1]])
        geom.walkways.append((outer, hole))
    return geom


class _Tokens:
    def __init__(self, location: str):
        self.location = location
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return hashlib.md5(f"map/{self.location}/{self.count}".encode()).hexdigest()


def expansion_json(city: City, geom: MapGeometry | None = None) -> dict:
    """The map-expansion dictionary NuScenesMap loads."""
    geom = geom or map_geometry(city)
    token = _Tokens(city.location)
    out: dict = {name: [] for name in ("polygon", "line", "node", "drivable_area", "road_segment", "road_block",
                                        "lane", "ped_crossing", "walkway", "stop_line", "carpark_area",
                                        "road_divider", "lane_divider", "traffic_light", "lane_connector")}
    out["version"] = MAP_VERSION
    out["canvas_edge"] = list(MAP_DIMS[city.location])
    out["arcline_path_3"] = {}
    out["connectivity"] = {}

    def nodes(points) -> list[str]:
        tokens = []
        for x, y in np.asarray(points, np.float64):
            tok = token()
            out["node"].append({"token": tok, "x": round(float(x), 4), "y": round(float(y), 4)})
            tokens.append(tok)
        return tokens

    def polygon(exterior, holes=()) -> str:
        tok = token()
        out["polygon"].append({"token": tok, "exterior_node_tokens": nodes(exterior),
                               "holes": [{"node_tokens": nodes(h)} for h in holes]})
        return tok

    def line(points) -> str:
        tok = token()
        out["line"].append({"token": tok, "node_tokens": nodes(points)})
        return tok

    drivable_token = token()
    out["drivable_area"].append({"token": drivable_token, "polygon_tokens": [polygon(p) for p in geom.drivable]})
    for poly, is_intersection in geom.road_segments:
        out["road_segment"].append({"token": token(), "polygon_token": polygon(poly),
                                    "is_intersection": bool(is_intersection),
                                    "drivable_area_token": drivable_token})
    for poly in geom.lanes:
        out["lane"].append({"token": token(), "polygon_token": polygon(poly), "lane_type": "CAR",
                            "from_edge_line_token": line(poly[[0, 3]]), "to_edge_line_token": line(poly[[1, 2]]),
                            "left_lane_divider_segments": [], "right_lane_divider_segments": []})
    crossing_tokens = []
    for poly in geom.ped_crossings:
        tok = token()
        crossing_tokens.append(tok)
        out["ped_crossing"].append({"token": tok, "polygon_token": polygon(poly), "road_segment_token": ""})
    for outer, hole in geom.walkways:
        out["walkway"].append({"token": token(), "polygon_token": polygon(outer, [hole])})
    for poly, crossing in geom.stop_lines:
        out["stop_line"].append({"token": token(), "polygon_token": polygon(poly), "stop_line_type": "PED_CROSSING",
                                 "ped_crossing_tokens": [crossing_tokens[crossing]], "traffic_light_tokens": [],
                                 "road_block_token": ""})
    for poly in geom.carparks:
        out["carpark_area"].append({"token": token(), "polygon_token": polygon(poly), "orientation": 0.0,
                                    "road_block_token": ""})
    for pts in geom.road_dividers:
        out["road_divider"].append({"token": token(), "line_token": line(pts), "road_segment_token": ""})
    for pts in geom.lane_dividers:
        line_tok = line(pts)
        out["lane_divider"].append({"token": token(), "line_token": line_tok, "lane_divider_segments": [
            {"node_token": n, "segment_type": "DOUBLE_DASHED_WHITE"}
            for n in out["line"][-1]["node_tokens"]]})
    return out


def prior_token(location: str) -> str:
    return hashlib.md5(f"semantic_prior/{location}".encode()).hexdigest()


_ENCODED: dict[str, tuple[str, bytes]] = {}


def write_maps(root: Path, city: City) -> str:
    """Write maps/expansion/<location>.json and the semantic-prior PNG; returns the PNG path relative to root.
    (Both are encoded once per location and process.)"""
    if city.location not in _ENCODED:
        geom = map_geometry(city)
        expansion = json.dumps(expansion_json(city, geom), separators=(",", ":"))
        # Semantic prior: drivable area at 10 px/m, from the canvas origin up to the city's far corner
        # (the devkit's MapMask reads it bottom-up: row 0 is the northern edge).
        width = int(np.ceil(city.bounds[2] / PRIOR_RESOLUTION)) + 1
        height = int(np.ceil(city.bounds[3] / PRIOR_RESOLUTION)) + 1
        mask = np.zeros((height, width), np.uint8)
        polys = [np.round(np.stack([p[:, 0] / PRIOR_RESOLUTION, height - 1 - p[:, 1] / PRIOR_RESOLUTION], 1) * 16)
                 .astype(np.int32) for p in geom.drivable]
        cv2.fillPoly(mask, polys, 255, lineType=cv2.LINE_8, shift=4)
        ok, png = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        assert ok
        _ENCODED[city.location] = (expansion, png.tobytes())
    expansion, png = _ENCODED[city.location]
    folder = root / "maps" / "expansion"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{city.location}.json").write_text(expansion)
    relative = f"maps/{prior_token(city.location)}.png"
    (root / relative).write_bytes(png)
    return relative
