"""TensorRT engine building: ONNX -> serialized engine (FP32/FP16/INT8), cached on disk.

Import-safe without ``tensorrt``: everything that does not talk to TensorRT (cache keys, engine paths,
calibration batching and the calibration-cache file) is plain Python and tested here; the parts that need
TensorRT call :func:`require_tensorrt`, which raises a one-line :class:`UserError` when it is missing.

TensorRT 10 Python API used (explicit batch is the default in TRT 10, so ``create_network(0)``)::

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger); parser.parse(onnx_bytes)   # errors: parser.get_error(i)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, bytes)
    config.set_flag(trt.BuilderFlag.FP16)                        # fp16 and int8 (int8 falls back to fp16)
    config.set_flag(trt.BuilderFlag.INT8); config.int8_calibrator = calibrator   # an IInt8EntropyCalibrator2
    plan = builder.build_serialized_network(network, config)      # IHostMemory, None on failure

Engine cache: ``<cache_dir>/<name>.<precision>.<key16>.engine`` plus a ``.json`` sidecar; the key is the
SHA-256 of (ONNX bytes hash, TensorRT version, precision, GPU name + compute capability, builder
options), so a changed ONNX file, a TensorRT upgrade, another precision or another GPU all build a new
engine instead of loading a stale or incompatible one (TensorRT engines are not portable across versions
or GPU architectures).

INT8 calibration (implicit quantization, TensorRT 10; deprecated there in favour of explicit Q/DQ, and
gone in TensorRT 11): :class:`CalibrationBatcher` turns an iterable of input dicts (from dataset frames)
into fixed-size batches; :class:`CalibratorCore` serves them to TensorRT from CUDA memory and reads/writes
the calibration cache file, so a second build skips calibration; :func:`make_entropy_calibrator` mixes it
into ``trt.IInt8EntropyCalibrator2``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from bevfusion_ros.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_BYTES = 4 << 30
ENGINE_SUFFIX = ".engine"


# ----------------------------------------------------------------------------- tensorrt availability


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a broken install (missing libnvinfer)
        return False
    return True


def require_tensorrt():
    """The ``tensorrt`` module, or a one-line UserError saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("the TensorRT back-end needs the `tensorrt` Python package (TensorRT 10, "
                        "`pip install tensorrt` on a machine with an NVIDIA GPU and CUDA); it is not installed "
                        "here - use --backend torch or onnxruntime") from None
    except Exception as err:  # noqa: BLE001 - e.g. OSError: libnvinfer.so not found
        raise UserError(f"the `tensorrt` package is installed but failed to load: "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return trt


def require_cuda():
    """torch with a usable CUDA device, or a one-line UserError."""
    import torch
    if not torch.cuda.is_available():
        raise UserError("the TensorRT back-end needs a CUDA GPU, and torch sees none "
                        f"(torch {torch.__version__}); use --backend torch or onnxruntime")
    return torch


def current_device_name(device: int | None = None) -> str:
    """'<GPU name> sm<major><minor>' of the current CUDA device (part of the engine cache key)."""
    torch = require_cuda()
    index = torch.cuda.current_device() if device is None else int(device)
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} sm{major}{minor}"


# ----------------------------------------------------------------------------- cache keys


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def onnx_hash(onnx: str | Path | bytes) -> str:
    """SHA-256 of the ONNX file's bytes (external-data files next to it are included by name + hash)."""
    if isinstance(onnx, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(onnx)).hexdigest()
    path = Path(onnx)
    if not path.is_file():
        raise UserError(f"ONNX file {path} not found (run `bevfusion-ros export` first)")
    digest = hashlib.sha256(sha256_file(path).encode())
    data_file = path.with_name(path.name + ".data")
    if data_file.is_file():
        digest.update(sha256_file(data_file).encode())
    return digest.hexdigest()


def engine_cache_key(onnx_sha256: str, trt_version: str, precision: str, device_name: str,
                     options: Mapping[str, Any] | None = None) -> str:
    """SHA-256 hex key of everything an engine depends on."""
    precision = normalize_precision(precision)
    payload = {"onnx": str(onnx_sha256), "tensorrt": str(trt_version), "precision": precision,
               "device": str(device_name), "options": dict(sorted((options or {}).items()))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def normalize_precision(precision: str) -> str:
    p = str(precision).lower().strip()
    p = {"float32": "fp32", "float16": "fp16", "half": "fp16", "fp": "fp32"}.get(p, p)
    if p not in PRECISIONS:
        raise UserError(f"unknown TensorRT precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    return p


def engine_path(cache_dir: str | Path, name: str, key: str, precision: str) -> Path:
    return Path(cache_dir) / f"{name}.{normalize_precision(precision)}.{key[:16]}{ENGINE_SUFFIX}"


def default_cache_dir() -> Path:
    """``$BEVFUSION_ENGINE_CACHE`` or ``~/.cache/bevfusion_ros/engines``."""
    env = os.environ.get("BEVFUSION_ENGINE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bevfusion_ros" / "engines"


def cached_engine(cache_dir: str | Path, name: str, key: str, precision: str) -> Path | None:
    """The cached engine for ``key`` when it and its sidecar exist and agree, else None."""
    path = engine_path(cache_dir, name, key, precision)
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if info.get("key") != key or info.get("size") != path.stat().st_size:
        return None
    return path


def stale_engines(cache_dir: str | Path, name: str, precision: str, keep_key: str) -> list[Path]:
    """Cached engines of ``name``/``precision`` built for another key (a previous ONNX, TensorRT or GPU)."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    prefix = f"{name}.{normalize_precision(precision)}."
    return sorted(p for p in cache_dir.glob(f"{prefix}*{ENGINE_SUFFIX}") if not p.name.startswith(prefix + keep_key[:16]))


# ----------------------------------------------------------------------------- calibration


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class CalibrationBatcher:
    """Groups an iterable of input dicts (one per frame, e.g. ``{"images": [1,N,3,H,W], ...}``, arrays or
    torch tensors with a leading batch axis) into batches of ``batch_size`` frames concatenated on axis 0,
    as contiguous float32 arrays. Stops after ``max_batches``; a last incomplete batch is dropped (TensorRT
    wants a fixed batch). Every dict must have the same names and per-frame shapes as the first one."""

    def __init__(self, samples: Iterable[Mapping[str, Any]], batch_size: int = 1, max_batches: int | None = None,
                 dtype=np.float32):
        if batch_size < 1:
            raise ValueError("calibration batch_size must be >= 1")
        self.samples = samples
        self.batch_size = int(batch_size)
        self.max_batches = max_batches
        self.dtype = dtype
        self.names: tuple[str, ...] | None = None
        self.shapes: dict[str, tuple[int, ...]] = {}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []
        produced = 0
        for index, sample in enumerate(self.samples):
            if self.max_batches is not None and produced >= self.max_batches:
                return
            arrays = {str(k): _to_numpy(v) for k, v in sample.items() if v is not None}
            if self.names is None:
                if not arrays:
                    raise ValueError("calibration sample 0 has no inputs")
                self.names = tuple(sorted(arrays))
                self.shapes = {k: tuple(v.shape) for k, v in arrays.items()}
            if tuple(sorted(arrays)) != self.names:
                raise ValueError(f"calibration sample {index} has inputs {sorted(arrays)}, expected {list(self.names)}")
            for k, v in arrays.items():
                if tuple(v.shape) != self.shapes[k]:
                    raise ValueError(f"calibration sample {index}: input {k!r} has shape {tuple(v.shape)}, "
                                     f"expected {self.shapes[k]}")
                if not np.all(np.isfinite(v)):
                    raise ValueError(f"calibration sample {index}: input {k!r} has NaN/inf")
            pending.append(arrays)
            if len(pending) == self.batch_size:
                yield {k: np.ascontiguousarray(np.concatenate([p[k] for p in pending], axis=0), dtype=self.dtype)
                       for k in self.names}
                produced += 1
                pending = []


class CalibratorCore:
    """The TensorRT-independent half of an INT8 calibrator.

    ``get_batch(names)`` copies the next batch into (reused) torch tensors on ``device`` and returns their
    data pointers in ``names`` order, or None when the batches are exhausted; ``read_calibration_cache``
    returns the cache file's bytes when it exists (TensorRT then skips calibration), and
    ``write_calibration_cache`` stores what TensorRT computed.
    """

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]], cache_file: str | Path, batch_size: int = 1,
                 device: str = "cuda"):
        self._batches = iter(batches)
        self.cache_file = Path(cache_file)
        self.batch_size = int(batch_size)
        self.device = device
        self._buffers: dict[str, Any] = {}
        self.batches_served = 0

    # TensorRT calls these (names as in IInt8Calibrator)
    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names: Sequence[str], *_unused) -> list[int] | None:
        import torch
        try:
            batch = next(self._batches)
        except StopIteration:
            return None
        missing = [n for n in names if n not in batch]
        if missing:
            raise KeyError(f"calibration batch lacks network input(s) {missing}; it has {sorted(batch)}")
        pointers = []
        for name in names:
            array = np.ascontiguousarray(batch[name], dtype=np.float32)
            buf = self._buffers.get(name)
            if buf is None or tuple(buf.shape) != array.shape:
                buf = torch.empty(array.shape, dtype=torch.float32, device=self.device)
                self._buffers[name] = buf
            buf.copy_(torch.from_numpy(array))
            pointers.append(int(buf.data_ptr()))
        if self.device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        self.batches_served += 1
        return pointers

    def read_calibration_cache(self, *_unused) -> bytes | None:
        if self.cache_file.is_file() and self.cache_file.stat().st_size > 0:
            return self.cache_file.read_bytes()
        return None

    def write_calibration_cache(self, cache) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_suffix(self.cache_file.suffix + ".tmp")
        tmp.write_bytes(bytes(cache))
        os.replace(tmp, self.cache_file)


def make_entropy_calibrator(batches: Iterable[Mapping[str, np.ndarray]], cache_file: str | Path,
                            batch_size: int = 1, device: str = "cuda"):
    """A ``trt.IInt8EntropyCalibrator2`` serving ``batches`` (needs TensorRT)."""
    trt = require_tensorrt()

    class EntropyCalibrator(CalibratorCore, trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            CalibratorCore.__init__(self, batches, cache_file, batch_size, device)

    return EntropyCalibrator()


# ----------------------------------------------------------------------------- building


def build_engine(onnx_path: str | Path, precision: str = "fp16", cache_dir: str | Path | None = None,
                 calibration_inputs: Iterable[Mapping[str, Any]] | None = None, calibration_batch_size: int = 1,
                 calibration_max_batches: int = 64, calibration_cache: str | Path | None = None,
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, rebuild: bool = False,
                 log=print, calibration_device: str = "cuda") -> Path:
    """The serialized engine for ``onnx_path`` at ``precision``: from the cache when its key matches,
    otherwise built with TensorRT (and cached). INT8 needs ``calibration_inputs`` unless the calibration
    cache file already exists."""
    precision = normalize_precision(precision)
    onnx_path = Path(onnx_path)
    digest = onnx_hash(onnx_path)
    trt = require_tensorrt()
    require_cuda()
    device_name = current_device_name()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = onnx_path.stem
    options = {"workspace_bytes": int(workspace_bytes)}
    key = engine_cache_key(digest, trt.__version__, precision, device_name, options)
    if not rebuild:
        hit = cached_engine(cache_dir, name, key, precision)
        if hit is not None:
            return hit
    for old in stale_engines(cache_dir, name, precision, key):
        log(f"tensorrt: engine {old.name} was built for another ONNX/TensorRT/GPU; rebuilding")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    calibrator = None
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        cache_file = Path(calibration_cache) if calibration_cache else \
            cache_dir / f"{name}.{digest[:16]}.calib"
        if isinstance(calibration_inputs, (list, tuple)) and not calibration_inputs:
            calibration_inputs = None
        if calibration_inputs is None and not cache_file.is_file():
            raise UserError("INT8 needs calibration inputs (dataset frames) or an existing calibration cache "
                            f"{cache_file}")
        batches = CalibrationBatcher(calibration_inputs or [], calibration_batch_size, calibration_max_batches)
        calibrator = make_entropy_calibrator(batches, cache_file, calibration_batch_size, calibration_device)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT failed to build a {precision} engine from {onnx_path} (see the log above)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = engine_path(cache_dir, name, key, precision)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(plan))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({
        "key": key, "onnx": str(onnx_path), "onnx_sha256": digest, "tensorrt": trt.__version__,
        "precision": precision, "device": device_name, "options": options, "size": path.stat().st_size,
        "build_s": round(time.perf_counter() - start, 2),
        "calibration_batches": getattr(calibrator, "batches_served", None)}, indent=2))
    return path


def load_engine(path: str | Path):
    """Deserialize an engine file (``trt.Runtime.deserialize_cuda_engine``)."""
    trt = require_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise UserError(f"TensorRT could not deserialize {path} (built by another TensorRT version or GPU?)")
    return engine, runtime
