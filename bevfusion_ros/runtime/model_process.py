"""``ModelProcess``: a :class:`~bevfusion_ros.runtime.pipeline.PerceptionPipeline` in a child process.

Why: in one Python process the model thread releases the GIL in every torch op and must take it back from
the ROS executor threads, which hold it while they convert messages. On 2 cores that convoy cost the model
stage ~50 ms per frame at 1x replay and ~3x its own time at 4x (docs/perception.md). In a child process the
model has an interpreter of its own; the two processes only share the CPU, which the kernel schedules.

Protocol: pickled messages over the child's stdin/stdout (``subprocess``, not ``multiprocessing``: a
spawned multiprocessing child re-imports the parent's ``__main__``, here a ROS node). The child moves its
stdout file descriptor aside before importing anything, so library prints cannot corrupt the stream; its
stderr is the parent's. A frame is ~4 MB (3 sweeps of points, six images decoded at 1/4): ~2-4 ms each way.
Requests: ``("init", config)``, ``("infer", frame, early, late_cameras)``, ``("exit",)``; with
``late_cameras`` the frame's cameras follow in a ``("cameras", list)`` message once the parent has them
(the child's LiDAR branch runs meanwhile). Replies to ``infer``: with ``early``, first ``("detections",
detections)`` as soon as they exist, then ``("result", result, plan rebuilds)`` (or ``("error", class
name, message)``).

Faults: an exception in the child comes back as the same error class name and message (``UserError``
stays a ``UserError``) and the child goes on. If the child dies (killed, out of memory, a segfault in a
native library), :meth:`infer` raises :class:`ModelProcessDied` and the next call starts a new child
(``restarts`` counts them), so one bad frame costs one frame, not the node. The child exits when its stdin
closes, i.e. when the parent exits for any reason: no orphans.
"""
from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bevfusion_ros.errors import UserError
from bevfusion_ros.frame import CameraInput, Detections, Frame, PerceptionResult


class ModelProcessDied(RuntimeError):
    """The model's child process exited; the next inference starts a new one."""


@dataclass
class ModelProcessConfig:
    """What the child needs to build its PerceptionPipeline (plain values: they cross a process boundary)."""
    model_config: str
    checkpoint: str | None
    backend: str = "torch"
    device: str = "cpu"
    num_threads: int = 2
    parallel_branches: bool = False   # camera branch on a second thread (PerceptionPipeline)
    backend_options: dict = field(default_factory=dict)
    start_timeout_s: float = 300.0    # importing torch and loading the model on a cold, loaded machine
    reply_timeout_s: float = 30.0     # one frame takes ~0.1 s: a child silent this long is hung, and replaced


class ModelProcess:
    """``infer(frame) -> PerceptionResult`` like PerceptionPipeline, computed in a child process.

    Thread-safe (one request at a time). ``plan_rebuilds`` is the child's bev_pool plan rebuild count, summed
    over restarts; ``timings_ms`` of each result gain ``transfer`` (round trip minus the child's total) and
    ``cpu`` (the child's CPU time for the frame; ``total`` is wall time)."""

    def __init__(self, config: ModelProcessConfig):
        self.config = config
        self.restarts = 0
        self._plan_rebuilds_done = 0       # of children that have exited (folded in by _reap)
        self._plan_rebuilds_child = 0      # of the running child
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._start()

    # ------------------------------------------------------------------ lifecycle
    def _start(self) -> None:
        cmd = [sys.executable, "-m", "bevfusion_ros.runtime.model_process"]
        env = dict(os.environ)
        # the child must import this checkout's package whatever the parent's working directory is
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        # numpy's OpenBLAS threads only busy-wait here (its products are tiny): 240 -> 133 ms of CPU per
        # frame at the same wall time (launch_graph.NODE_ENV has the measurements); a user's value wins
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                      bufsize=1 << 20)
        self._send(("init", self.config))
        reply = self._receive(self.config.start_timeout_s)
        if reply[0] != "ready":
            self._reap()
            _raise_remote(reply, "the model process failed to start")

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._plan_rebuilds_done += self._plan_rebuilds_child     # fold the exiting child's count in
        self._plan_rebuilds_child = 0
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                try:
                    self._send(("exit",))
                except ModelProcessDied:
                    pass
            self._reap()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def plan_rebuilds(self) -> int:
        return self._plan_rebuilds_done + self._plan_rebuilds_child

    # ------------------------------------------------------------------ requests
    def _send(self, message) -> None:
        try:
            pickle.dump(message, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as err:
            raise ModelProcessDied(f"the model process is gone ({err})") from None

    def _receive(self, timeout_s: float):
        """The child's next reply. A child that dies closes the pipe (EOF); one that stays silent for
        ``timeout_s`` is killed, so a hung model costs frames, never the node."""
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        if not ready:
            self._proc.kill()
            raise ModelProcessDied(f"the model process did not answer within {timeout_s:.0f} s and was killed")
        try:
            return pickle.load(self._proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as err:
            code = self._proc.poll()
            raise ModelProcessDied(f"the model process exited (code {code}): {type(err).__name__}") from None

    def infer(self, frame: Frame, on_detections: Callable[[Detections], None] | None = None,
              cameras: Callable[[], list[CameraInput]] | None = None) -> PerceptionResult:
        """:meth:`PerceptionPipeline.infer` in the child. With ``on_detections`` the child sends the
        detections as soon as they exist, and they are handed to it here (on this thread) while the child
        finishes the map. With ``cameras`` the frame goes first without its cameras, so the child starts
        the LiDAR branch while ``cameras()`` runs here (the node decodes the images in it); its list then
        follows (``frame.cameras`` is set from it). An exception from ``on_detections`` or ``cameras`` is
        raised after the frame's reply has been read, so the stream stays in step."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._reap()
                self.restarts += 1
                self._start()
            start = time.perf_counter()
            callback_error = None
            try:
                self._send(("infer", frame, on_detections is not None, cameras is not None))
                if cameras is not None:
                    late = None
                    try:
                        late = frame.cameras = cameras()
                    except Exception as err:  # noqa: BLE001 - re-raised below, once the reply is read
                        callback_error = err
                    self._send(("cameras", late))
                reply = self._receive(self.config.reply_timeout_s)
                while reply[0] == "detections":
                    if on_detections is not None and callback_error is None:
                        try:
                            on_detections(reply[1])
                        except Exception as err:  # noqa: BLE001 - re-raised below, once the result is read
                            callback_error = err
                    reply = self._receive(self.config.reply_timeout_s)
            except ModelProcessDied:
                self._reap()
                raise
            if callback_error is not None:
                raise callback_error
            if reply[0] != "result":
                _raise_remote(reply, "inference failed in the model process")
            _, result, rebuilds = reply
            self._plan_rebuilds_child = rebuilds
            round_trip = (time.perf_counter() - start) * 1e3
            result.timings_ms["transfer"] = max(0.0, round_trip - result.timings_ms.get("total", 0.0))
            return result

    def __del__(self):  # best effort; close() is the contract
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _raise_remote(reply, context: str):
    if reply[0] == "error":
        _, kind, message = reply
        if kind == "UserError":
            raise UserError(message)
        raise RuntimeError(f"{kind}: {message}")
    raise RuntimeError(f"{context}: unexpected reply {reply[0]!r}")


# ---------------------------------------------------------------------- child side
class _LateCameraReader:
    """The ``("cameras", list)`` message that follows an ``infer`` sent without its cameras: read by the
    pipeline's camera side when it needs them (:meth:`read`), or skipped afterwards (:meth:`drain`), so
    exactly one such message is consumed per frame whatever happened to the frame."""

    def __init__(self, stream, expected: bool):
        self._stream = stream
        self.expected = expected
        self._consumed = not expected

    def read(self):
        self._consumed = True           # before reading: a failed read must not be retried by drain()
        message = pickle.load(self._stream)
        if message[0] != "cameras":
            raise RuntimeError(f"expected the frame's cameras, got {message[0]!r}")
        if message[1] is None:
            raise UserError("the node could not prepare this frame's cameras")
        return message[1]

    def drain(self) -> None:
        if not self._consumed:
            self._consumed = True
            pickle.load(self._stream)


def _serve() -> int:
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    os.dup2(2, 1)                      # anything printed to fd 1 from now on goes to stderr
    sys.stdout = sys.stderr
    inp = os.fdopen(os.dup(0), "rb", buffering=1 << 20)

    def reply(message) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    pipeline = None
    while True:
        try:
            message = pickle.load(inp)
        except EOFError:
            return 0                   # the parent is gone
        kind = message[0]
        try:
            if kind == "exit":
                return 0
            if kind == "init":
                config: ModelProcessConfig = message[1]
                import torch

                from bevfusion_ros.runtime.pipeline import PerceptionPipeline
                torch.set_num_threads(int(config.num_threads))
                pipeline = PerceptionPipeline(config.model_config, config.checkpoint, backend=config.backend,
                                              device=config.device, parallel_branches=config.parallel_branches,
                                              **config.backend_options)
                reply(("ready",))
            elif kind == "infer":
                late = _LateCameraReader(inp, expected=len(message) > 3 and bool(message[3]))
                try:
                    if pipeline is None:
                        raise RuntimeError("infer before init")
                    cpu_start = time.process_time()
                    early = len(message) > 2 and bool(message[2])
                    result = pipeline.infer(message[1], on_detections=(
                        (lambda detections: reply(("detections", detections))) if early else None),
                        cameras=late.read if late.expected else None)
                finally:
                    late.drain()           # a frame that failed early still has its cameras in the pipe
                # CPU time of this (single-purpose) process for the frame: against timings_ms["total"] (wall)
                # it tells a slow model from a descheduled one on a shared machine
                result.timings_ms["cpu"] = (time.process_time() - cpu_start) * 1e3
                reply(("result", result, pipeline.plan_rebuilds))
            else:
                raise RuntimeError(f"unknown request {kind!r}")
        except Exception as err:  # noqa: BLE001 - report to the parent, keep serving
            reply(("error", type(err).__name__, str(err)))


if __name__ == "__main__":
    sys.exit(_serve())
