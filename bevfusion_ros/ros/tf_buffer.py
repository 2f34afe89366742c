"""A small time-indexed transform buffer for tf2_msgs/TFMessage (tf2_ros is not on PyPI).

Frames form a tree: every child frame has one parent. Each link is either *static* (from ``/tf_static``;
valid at every time) or *dynamic* (from ``/tf``; a bounded, time-sorted history). ``lookup(target, source,
stamp)`` chains the links through the tree and returns ``T_target_source`` (4x4, maps points in
``source`` into ``target``, the convention of geometry.py).

Between two recorded stamps a dynamic link is interpolated: translation linearly, rotation by slerp.
Outside the recorded span it is held at the nearest sample for up to ``tolerance_us``; further out the
lookup raises :class:`ExtrapolationError`. Unknown frames and frames in disconnected trees raise
:class:`TransformError`. Both are ``LookupError``s.

Times are integer microseconds (nuScenes' unit; see ros/time.py). ``stamp_us=None`` means "latest".
Works on rclpy TFMessages and rosbags' dataclasses alike.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bevfusion_ros import geometry


class TransformError(LookupError):
    """No transform between the requested frames (unknown frame, disconnected trees)."""


class ExtrapolationError(TransformError):
    """The requested time is outside a dynamic link's history by more than the tolerance."""


@dataclass
class _Link:
    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    rotations: list[np.ndarray] = field(default_factory=list)   # (w, x, y, z), unit


def slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions (w, x, y, z), shortest path."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        out = q0 + fraction * (q1 - q0)
        return out / np.linalg.norm(out)
    theta = np.arccos(min(dot, 1.0))
    sin_theta = np.sin(theta)
    return (np.sin((1.0 - fraction) * theta) * q0 + np.sin(fraction * theta) * q1) / sin_theta


def _frame(name: str) -> str:
    return str(name).lstrip("/")


class TFBuffer:
    """Static and dynamic transforms with bounded history, interpolation and chaining."""

    def __init__(self, history_us: int = 10_000_000, max_samples: int = 2000, tolerance_us: int = 100_000):
        self.history_us = int(history_us)
        self.max_samples = int(max_samples)
        self.tolerance_us = int(tolerance_us)
        self._links: dict[str, _Link] = {}

    # ------------------------------------------------------------------ input

    def set_transform(self, parent: str, child: str, stamp_us: int, translation, rotation_wxyz,
                      static: bool = False) -> None:
        """Record ``T_parent_child`` (the child's pose in the parent) at ``stamp_us``."""
        parent, child = _frame(parent), _frame(child)
        if not parent or not child or parent == child:
            raise ValueError(f"bad transform {parent!r} -> {child!r}")
        rotation = np.asarray(rotation_wxyz, dtype=np.float64).reshape(4)
        norm = np.linalg.norm(rotation)
        translation = np.asarray(translation, dtype=np.float64).reshape(3)
        if not np.isfinite(norm) or norm < 1e-9 or not np.all(np.isfinite(translation)):
            raise ValueError(f"transform {parent!r} -> {child!r} is not finite / has a zero quaternion")
        rotation = rotation / norm
        link = self._links.get(child)
        if link is None or link.parent != parent or link.static != static:
            # a re-parented (or static <-> dynamic) frame starts a fresh history, as in tf2
            link = _Link(parent=parent, static=static)
            self._links[child] = link
        if static:
            link.stamps, link.translations, link.rotations = [int(stamp_us)], [translation], [rotation]
            return
        stamp_us = int(stamp_us)
        index = bisect.bisect_left(link.stamps, stamp_us)
        if index < len(link.stamps) and link.stamps[index] == stamp_us:
            link.translations[index], link.rotations[index] = translation, rotation
        else:
            link.stamps.insert(index, stamp_us)
            link.translations.insert(index, translation)
            link.rotations.insert(index, rotation)
        self._prune(link)

    def set_matrix(self, parent: str, child: str, stamp_us: int, transform: np.ndarray,
                   static: bool = False) -> None:
        transform = np.asarray(transform, dtype=np.float64)
        self.set_transform(parent, child, stamp_us, transform[:3, 3],
                           geometry.matrix_to_quat_wxyz(transform[:3, :3]), static)

    def add_message(self, msg: Any, static: bool = False) -> int:
        """Ingest a TFMessage (``/tf`` or, with ``static=True``, ``/tf_static``); returns transforms added."""
        from bevfusion_ros.ros.time import time_to_us

        added = 0
        for stamped in msg.transforms:
            t, r = stamped.transform.translation, stamped.transform.rotation
            self.set_transform(stamped.header.frame_id, stamped.child_frame_id, time_to_us(stamped.header.stamp),
                               (t.x, t.y, t.z), (r.w, r.x, r.y, r.z), static=static)
            added += 1
        return added

    def _prune(self, link: _Link) -> None:
        newest = link.stamps[-1]
        cut = bisect.bisect_left(link.stamps, newest - self.history_us)
        cut = max(cut, len(link.stamps) - self.max_samples)
        if cut > 0:
            del link.stamps[:cut], link.translations[:cut], link.rotations[:cut]

    # ------------------------------------------------------------------ queries

    def frames(self) -> set[str]:
        names = set(self._links)
        names.update(link.parent for link in self._links.values())
        return names

    def is_static(self, child: str) -> bool:
        link = self._links.get(_frame(child))
        return bool(link and link.static)

    def time_range(self, child: str) -> tuple[int, int] | None:
        """(oldest, newest) stamp of a dynamic link, None for a static or unknown one."""
        link = self._links.get(_frame(child))
        if link is None or link.static:
            return None
        return link.stamps[0], link.stamps[-1]

    def _link_transform(self, child: str, link: _Link, stamp_us: int | None) -> np.ndarray:
        if link.static or stamp_us is None:
            return geometry.make_transform(link.rotations[-1], link.translations[-1])
        stamps = link.stamps
        first, last = stamps[0], stamps[-1]
        if stamp_us <= first or stamp_us >= last:
            nearest = 0 if stamp_us <= first else -1
            gap = first - stamp_us if stamp_us <= first else stamp_us - last
            if gap > self.tolerance_us:
                raise ExtrapolationError(
                    f"transform {link.parent!r} -> {child!r} requested at {stamp_us} us, outside its history "
                    f"[{first}, {last}] us by {gap} us (tolerance {self.tolerance_us} us)")
            return geometry.make_transform(link.rotations[nearest], link.translations[nearest])
        upper = bisect.bisect_right(stamps, stamp_us)
        lower = upper - 1
        if stamps[lower] == stamp_us:
            return geometry.make_transform(link.rotations[lower], link.translations[lower])
        fraction = (stamp_us - stamps[lower]) / (stamps[upper] - stamps[lower])
        translation = (1.0 - fraction) * link.translations[lower] + fraction * link.translations[upper]
        rotation = slerp(link.rotations[lower], link.rotations[upper], fraction)
        return geometry.make_transform(rotation, translation)

    def _chain_to_root(self, frame: str) -> list[str]:
        chain = [frame]
        seen = {frame}
        while chain[-1] in self._links:
            parent = self._links[chain[-1]].parent
            if parent in seen:
                raise TransformError(f"transform tree has a cycle through {parent!r}")
            chain.append(parent)
            seen.add(parent)
        return chain

    def _to_ancestor(self, chain: list[str], ancestor: str, stamp_us: int | None) -> np.ndarray:
        """T_ancestor_frame for chain = [frame, parent, ..., ancestor, ...]."""
        transform = np.eye(4)
        for child in chain:
            if child == ancestor:
                break
            transform = self._link_transform(child, self._links[child], stamp_us) @ transform
        return transform

    def lookup(self, target: str, source: str, stamp_us: int | None = None) -> np.ndarray:
        """``T_target_source`` (4x4) at ``stamp_us`` (None = latest). Raises :class:`TransformError`."""
        target, source = _frame(target), _frame(source)
        known = self.frames()
        for name in (target, source):
            if name not in known:
                raise TransformError(f"unknown frame {name!r} (known: {sorted(known)})")
        if target == source:
            return np.eye(4)
        source_chain = self._chain_to_root(source)
        target_chain = self._chain_to_root(target)
        target_set = set(target_chain)
        ancestor = next((name for name in source_chain if name in target_set), None)
        if ancestor is None:
            raise TransformError(f"frames {target!r} and {source!r} are not connected (roots "
                                 f"{target_chain[-1]!r} and {source_chain[-1]!r})")
        T_ancestor_source = self._to_ancestor(source_chain, ancestor, stamp_us)
        T_ancestor_target = self._to_ancestor(target_chain, ancestor, stamp_us)
        return geometry.invert_transform(T_ancestor_target) @ T_ancestor_source

    def can_transform(self, target: str, source: str, stamp_us: int | None = None) -> bool:
        try:
            self.lookup(target, source, stamp_us)
        except TransformError:
            return False
        return True
