"""BEV map-segmentation ground truth rasterized with the devkit's ``NuScenesMap`` (BEVFusion's protocol).

As BEVFusion's ``LoadBEVSegmentation``: a patch of the map centred on the LiDAR grid, rotated by the
LiDAR's heading in the global frame, rasterized with ``NuScenesMapExplorer``'s polygon/line rasterizers,
then transposed so that axis 1 is LiDAR x and axis 2 is LiDAR y (the :class:`bevfusion_ros.frame.BEVMap`
layout: ``mask[c, i, j]`` is the cell at x = x_min + (i + 0.5) * res, y = y_min + (j + 0.5) * res).
``drivable_area`` is the map's drivable_area layer; ``divider`` is road_divider + lane_divider; the other
classes are the layer of the same name.

One fix over calling ``get_map_mask`` directly: the devkit iterates a clipped ``MultiLineString`` the
shapely-1 way, which fails under shapely 2; lines are exploded into LineStrings first, then rasterized by
the devkit's own ``_line_geom_to_mask``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bevfusion_ros.classes import MAP_CLASSES
from bevfusion_ros.errors import UserError

MAP_LOCATIONS = ("singapore-onenorth", "singapore-hollandvillage", "singapore-queenstown", "boston-seaport")


def class_layers(name: str) -> tuple[str, ...]:
    """NuScenesMap layers that make up one map class."""
    if name == "divider":
        return ("road_divider", "lane_divider")
    if name == "drivable_area*":
        return ("road_segment", "lane")
    return (name,)


def grid_shape(xbound: Sequence[float], ybound: Sequence[float]) -> tuple[int, int]:
    return (int(round((xbound[1] - xbound[0]) / xbound[2])), int(round((ybound[1] - ybound[0]) / ybound[2])))


class MapCache:
    """``NuScenesMap`` per location, loaded once (each map JSON takes a while to parse)."""

    def __init__(self, dataroot: str | Path):
        self.dataroot = str(dataroot)
        self._maps: dict = {}

    def get(self, location: str):
        if location not in self._maps:
            from nuscenes.map_expansion.map_api import NuScenesMap
            path = Path(self.dataroot) / "maps" / "expansion" / f"{location}.json"
            if location not in MAP_LOCATIONS:
                raise UserError(f"unknown map location {location!r} (the devkit knows {', '.join(MAP_LOCATIONS)})")
            if not path.is_file():
                raise UserError(f"map expansion {path} not found: map-segmentation GT needs the nuScenes map "
                                "expansion (maps/expansion/<location>.json) in the dataroot")
            self._maps[location] = NuScenesMap(dataroot=self.dataroot, map_name=location)
        return self._maps[location]


def rasterize_map(nusc_map, T_global_lidar: np.ndarray, xbound: Sequence[float], ybound: Sequence[float],
                  classes: Sequence[str] = MAP_CLASSES) -> np.ndarray:
    """Boolean masks [C, X, Y] of ``classes`` on the LiDAR-frame grid (xbound/ybound = [min, max, step])."""
    from shapely.geometry import LineString, MultiLineString

    T = np.asarray(T_global_lidar, dtype=np.float64)
    nx, ny = grid_shape(xbound, ybound)
    patch_w, patch_h = xbound[1] - xbound[0], ybound[1] - ybound[0]   # w along LiDAR x, h along LiDAR y
    centre = T @ np.array([(xbound[0] + xbound[1]) / 2.0, (ybound[0] + ybound[1]) / 2.0, 0.0, 1.0])
    heading = np.arctan2(T[1, 0], T[0, 0])
    patch_box = (float(centre[0]), float(centre[1]), float(patch_h), float(patch_w))
    patch_angle = float(np.degrees(heading))
    canvas = (ny, nx)
    local_box = (0.0, 0.0, patch_box[2], patch_box[3])

    explorer = nusc_map.explorer
    layers = sorted({layer for name in classes for layer in class_layers(name)})
    layer_mask: dict[str, np.ndarray] = {}
    for layer in layers:
        if layer in nusc_map.non_geometric_polygon_layers:
            geoms = explorer._get_layer_polygon(patch_box, patch_angle, layer)
            mask = explorer._polygon_geom_to_mask(geoms, local_box, layer, canvas)
        elif layer in nusc_map.non_geometric_line_layers:
            lines = []
            for geom in explorer._get_layer_line(patch_box, patch_angle, layer) or []:
                if isinstance(geom, MultiLineString):
                    lines.extend(geom.geoms)
                elif isinstance(geom, LineString):
                    lines.append(geom)
                elif hasattr(geom, "geoms"):   # GeometryCollection from a clipped line
                    lines.extend(g for g in geom.geoms if isinstance(g, LineString))
            mask = explorer._line_geom_to_mask(lines, local_box, layer, canvas)
        else:
            raise ValueError(f"map class layer {layer!r} is not a NuScenesMap polygon or line layer")
        layer_mask[layer] = np.zeros(canvas, bool) if mask is None else mask.astype(bool)

    out = np.zeros((len(classes), nx, ny), dtype=bool)
    for k, name in enumerate(classes):
        for layer in class_layers(name):
            out[k] |= layer_mask[layer].T          # [Y, X] canvas -> [X, Y]
    return out


def sample_map_gt(nusc, sample_token: str, xbound: Sequence[float], ybound: Sequence[float],
                  classes: Sequence[str] = MAP_CLASSES, maps: MapCache | None = None,
                  T_global_lidar: np.ndarray | None = None) -> np.ndarray:
    """Map GT [C, X, Y] for a sample's LIDAR_TOP keyframe (its log's map location)."""
    from bevfusion_ros.eval.detection import sample_lidar_to_global

    maps = maps or MapCache(nusc.dataroot)
    sample = nusc.get("sample", sample_token)
    scene = nusc.get("scene", sample["scene_token"])
    location = nusc.get("log", scene["log_token"])["location"]
    if T_global_lidar is None:
        T_global_lidar = sample_lidar_to_global(nusc, sample_token)
    return rasterize_map(maps.get(location), T_global_lidar, xbound, ybound, classes)
