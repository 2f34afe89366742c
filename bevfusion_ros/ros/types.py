"""Message type names -> rclpy classes and -> a rosbags typestore that knows the project's types.

Type names are accepted in any of the usual spellings: ``sensor_msgs/msg/PointCloud2`` (rosbag2, the
canonical form returned here), ``sensor_msgs/PointCloud2`` (ROS 1 style) and
``sensor_msgs.msg.PointCloud2`` (Python).

The rosbags typestore is ROS 2 Kilted's with ``bevfusion_msgs`` and ``vision_msgs`` registered from the
``.msg`` files in ``interfaces/`` (or, when installed without the source tree, from the installed
``share/<pkg>/msg/`` folders). ``tf2_msgs`` comes with the Kilted store.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from bevfusion_ros.paths import REPO_ROOT

# Interface packages the project defines or carries compat copies of: package -> source folder.
PROJECT_INTERFACES: dict[str, Path] = {
    "bevfusion_msgs": REPO_ROOT / "interfaces" / "bevfusion_msgs",
    "vision_msgs": REPO_ROOT / "interfaces" / "compat" / "vision_msgs",
    "tf2_msgs": REPO_ROOT / "interfaces" / "compat" / "tf2_msgs",
}


class UnknownMessageType(LookupError):
    """The type name does not resolve to a message class in this environment."""


def normalize_type_name(type_name: str) -> str:
    """Any spelling of a message type -> ``pkg/msg/Type``."""
    name = type_name.strip().replace(".", "/")
    parts = [part for part in name.split("/") if part]
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg":
        raise UnknownMessageType(f"not a message type name: {type_name!r} (expected pkg/msg/Type)")
    return "/".join(parts)


def type_name_of(msg_or_class: Any) -> str:
    """``pkg/msg/Type`` of an rclpy message instance or class."""
    cls = msg_or_class if isinstance(msg_or_class, type) else type(msg_or_class)
    module = cls.__module__.split(".")
    if len(module) < 2 or module[1] != "msg":
        raise UnknownMessageType(f"{cls!r} is not a generated ROS message class")
    return f"{module[0]}/msg/{cls.__name__}"


@functools.lru_cache(maxsize=None)
def msg_class(type_name: str) -> type:
    """The rclpy message class of ``type_name``; :class:`UnknownMessageType` if the environment lacks it."""
    package, _, name = normalize_type_name(type_name).split("/")
    try:
        module = importlib.import_module(f"{package}.msg")
    except ImportError as err:
        raise UnknownMessageType(f"message package {package!r} is not available ({err})") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise UnknownMessageType(f"{package}/msg has no message type {name!r}") from None


def has_msg_class(type_name: str) -> bool:
    try:
        msg_class(type_name)
    except UnknownMessageType:
        return False
    return True


def _msg_dir(package: str) -> Path | None:
    """Folder with ``package``'s .msg files: the source tree, else the installed share folder."""
    source = PROJECT_INTERFACES.get(package)
    if source is not None and (source / "msg").is_dir():
        return source / "msg"
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    for prefix in prefixes:
        candidate = Path(prefix) / "share" / package / "msg"
        if candidate.is_dir():
            return candidate
    return None


def msg_definitions(package: str) -> dict[str, str]:
    """``{"pkg/msg/Type": msg text}`` of one of the project's interface packages."""
    folder = _msg_dir(package)
    if folder is None:
        raise UnknownMessageType(f"no .msg files found for {package!r}")
    return {f"{package}/msg/{path.stem}": path.read_text() for path in sorted(folder.glob("*.msg"))}


@functools.lru_cache(maxsize=None)
def typestore():
    """rosbags typestore: ROS 2 Kilted + the project's interface types (cached; treat as read-only)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    extra: dict[str, Any] = {}
    for package in ("vision_msgs", "bevfusion_msgs", "tf2_msgs"):
        for name, text in msg_definitions(package).items():
            if name in store.fielddefs:
                continue
            extra.update(get_types_from_msg(text, name))
    store.register(extra)
    return store
