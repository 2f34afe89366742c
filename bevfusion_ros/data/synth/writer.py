"""The nuScenes v1.0 tables of a synthetic dataset: records accumulated while scenes are generated, then
written as the 13 JSON tables (plus lidarseg.json) under ``<out>/<version>/``.

Pitfalls handled here (../shared/NUSCENES-FORMAT.md): missing neighbours are '' (never null); tokens are
unique per table; every category carries its lidarseg `index`; the `map` table covers every log and points
at an existing PNG; the LiDAR's camera_intrinsic is [].
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bevfusion_ros.classes import ATTRIBUTES
from bevfusion_ros.data.synth import semantics as sem

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")
VISIBILITY_LEVELS = (("1", "v0-40", "visibility of whole object is between 0 and 40%"),
                     ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
                     ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
                     ("4", "v80-100", "visibility of whole object is between 80 and 100%"))
ATTRIBUTE_DESCRIPTIONS = {
    "cycle.with_rider": "There is someone on the bicycle or motorcycle.",
    "cycle.without_rider": "There is NO one on the bicycle or motorcycle.",
    "pedestrian.moving": "The human is moving.",
    "pedestrian.standing": "The human is standing.",
    "pedestrian.sitting_lying_down": "The human is sitting or lying down.",
    "vehicle.moving": "Vehicle is moving.",
    "vehicle.parked": "Vehicle is parked.",
    "vehicle.stopped": "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move.",
}


def token(*parts) -> str:
    """A deterministic 32-hex token from its parts."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def visibility_token(fraction: float) -> str:
    if fraction >= 0.8:
        return "4"
    if fraction >= 0.6:
        return "3"
    if fraction >= 0.4:
        return "2"
    return "1"


class TableWriter:
    def __init__(self, version: str, dataset_key: str):
        self.version = version
        self.key = dataset_key
        self.tables: dict[str, list[dict]] = {name: [] for name in TABLES}
        self.lidarseg: list[dict] = []
        self.category_token = {name: token(self.key, "category", name) for _, name, _ in sem.LIDARSEG_CATEGORIES}
        self.attribute_token = {name: token(self.key, "attribute", name) for name in ATTRIBUTES}
        for idx, name, description in sem.LIDARSEG_CATEGORIES:
            self.tables["category"].append({"token": self.category_token[name], "name": name,
                                            "description": description, "index": idx})
        for name in ATTRIBUTES:
            self.tables["attribute"].append({"token": self.attribute_token[name], "name": name,
                                             "description": ATTRIBUTE_DESCRIPTIONS[name]})
        for tok, level, description in VISIBILITY_LEVELS:
            self.tables["visibility"].append({"token": tok, "level": level, "description": description})
        self._sensor_tokens: dict[str, str] = {}
        self._maps: dict[str, dict] = {}

    def add(self, table: str, record: dict) -> dict:
        self.tables[table].append(record)
        return record

    def sensor_token(self, channel: str, modality: str) -> str:
        if channel not in self._sensor_tokens:
            tok = token(self.key, "sensor", channel)
            self._sensor_tokens[channel] = tok
            self.add("sensor", {"token": tok, "channel": channel, "modality": modality})
        return self._sensor_tokens[channel]

    def add_map(self, location: str, filename: str, log_token: str) -> None:
        if location not in self._maps:
            self._maps[location] = self.add("map", {"token": token(self.key, "map", location), "log_tokens": [],
                                                    "category": "semantic_prior", "filename": filename})
        self._maps[location]["log_tokens"].append(log_token)

    def merge(self, other: "TableWriter") -> None:
        """Append the records of another writer of the same dataset (one scene generated elsewhere)."""
        for name in ("instance", "calibrated_sensor", "ego_pose", "log", "scene", "sample", "sample_data",
                     "sample_annotation"):
            self.tables[name].extend(other.tables[name])
        for record in other.tables["sensor"]:
            self.sensor_token(record["channel"], record["modality"])
        for location, record in other._maps.items():
            for log_token in record["log_tokens"]:
                self.add_map(location, record["filename"], log_token)
        self.lidarseg.extend(other.lidarseg)

    def write(self, root: Path) -> None:
        table_dir = root / self.version
        table_dir.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            _check_unique(name, self.tables[name])
            (table_dir / f"{name}.json").write_text(json.dumps(self.tables[name], indent=0))
        if self.lidarseg:
            _check_unique("lidarseg", self.lidarseg)
            (table_dir / "lidarseg.json").write_text(json.dumps(self.lidarseg, indent=0))


def _check_unique(name: str, records: list[dict]) -> None:
    tokens = [r["token"] for r in records]
    if len(set(tokens)) != len(tokens):
        raise AssertionError(f"duplicate tokens in table {name}")
