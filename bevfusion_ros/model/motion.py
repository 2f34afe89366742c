"""Object velocity from the multi-sweep point cloud: register each box's newest-sweep points onto its
oldest-sweep points in bird's-eye view.

Why: a single-frame detector has to infer velocity from the motion blur the accumulated sweeps leave on an
object, and with 3 sweeps (0.1 s) that blur is a fraction of a voxel. The tiny model never learned it
(its velocity branch decayed to zero: the L1 optimum for an uninformative feature is the median, 0).
The geometry, however, is plain: the sweeps are ego-motion compensated, so a moving object's points in
the oldest sweep are its newest-sweep points shifted back by ``v * dt``. Nothing else moves them.

Method, per box of a class that moves (vehicles, cyclists, pedestrians):
1. Points of the newest, the middle and the oldest sweep (by the Δt channel) above the ground (box bottom
   + ``ground_clearance``) inside the box's footprint grown by the largest possible shift
   (``max_speed · Δt``) and ``margin``, in the box's (along, across) frame.
2. BEV occupancy of each sweep on ``bin_m`` cells, points splatted bilinearly.
3. The 2-D shift maximizing the cross-correlation of newest and oldest (FFT), refined to sub-cell by a
   parabola per axis. Accepted when both sweeps have ``min_points`` points, the peak is inside the search
   window, its normalized correlation is at least ``min_correlation``, and the newest-to-middle
   registration (an independent measurement over half the time) agrees.
4. ``v = shift / Δt``, rotated back from the box frame. Being 2-D, the result does not depend on the
   box's yaw being right: a front/back flip or an axis a few tens of degrees off changes nothing.

Boxes that fail a check keep the network's velocity. Accuracy and cost: ``models/README.md``
("Velocity and heading").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bevfusion_ros.classes import DETECTION_CLASSES
from bevfusion_ros.model.config import PointVelocityConfig

# Classes whose objects move along their heading (the devkit ignores velocity for cones and barriers).
MOVING_CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle",
                  "bicycle")
# A box's points reach up to its top + this (m): the predicted height may be short. The per-frame prefilter
# and the per-box band must use the same value, or the prefilter would drop points a box keeps.
_TOP_MARGIN_M = 0.3


@dataclass
class PointVelocityResult:
    velocity: np.ndarray               # [M, 2] (vx, vy) in the points' frame; the input velocity where invalid
    measured: np.ndarray               # [M] bool: measured from the points


def _occupancy(along: np.ndarray, across: np.ndarray, sweep: np.ndarray, half: tuple[float, float],
               bin_m: float) -> np.ndarray:
    """BEV occupancy [3, n_along, n_across] of the newest, middle and oldest sweep (0, 1, 2), each point
    splatted bilinearly onto its four nearest cell centres: a sub-cell shift of the points then shifts the
    histogram smoothly, where hard binning would snap edges to cell borders and bias the registration
    by up to half a cell."""
    shape = (3, int(2 * half[0] / bin_m) + 2, int(2 * half[1] / bin_m) + 2)
    fa = np.clip((along + half[0]) / bin_m, 0.0, shape[1] - 1.001)
    fc = np.clip((across + half[1]) / bin_m, 0.0, shape[2] - 1.001)
    ia, ic = fa.astype(np.int64), fc.astype(np.int64)
    wa, wc = fa - ia, fc - ic
    base = (sweep * shape[1] + ia) * shape[2] + ic
    index = np.concatenate([base, base + 1, base + shape[2], base + shape[2] + 1])
    weight = np.concatenate([(1 - wa) * (1 - wc), (1 - wa) * wc, wa * (1 - wc), wa * wc])
    hist = np.bincount(index, weight, minlength=int(np.prod(shape)))
    return hist.reshape(shape)


def _parabola(y0: float, y1: float, y2: float) -> float:
    """Sub-cell offset of the vertex of the parabola through three samples around a maximum."""
    curvature = y0 - 2 * y1 + y2
    return float(np.clip(0.5 * (y0 - y2) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def _fft_size(shape: tuple[int, int], max_bins: int) -> tuple[int, int]:
    """Power-of-two FFT size holding a histogram and the search window without wrap-around."""
    return tuple(1 << int(np.ceil(np.log2(n + max_bins + 1))) for n in shape)


def _best_shifts(new: np.ndarray, old: np.ndarray, max_bins: int, min_correlation: float,
                 size: tuple[int, int]) -> list[tuple[float, float] | None]:
    """Per pair j of ``new``, ``old`` [J, A, C] (histograms zero-padded to one shape): the shift (sa, sc) in
    cells, sub-cell, maximizing sum new[j, a, c] * old[j, a - sa, c - sc] over |sa|, |sc| <= max_bins; None
    when the peak is on the window's edge or too weak.

    All pairs of one FFT size go through one batched FFT: per box the transforms are tiny (64 x 64), so
    numpy's per-call overhead, not the arithmetic, was most of their cost."""
    corr = np.fft.irfft2(np.fft.rfft2(new, size) * np.conj(np.fft.rfft2(old, size)), size)
    shifts = np.arange(-max_bins, max_bins + 1)
    scores = corr[:, (shifts % size[0])[:, None], (shifts % size[1])[None, :]]          # [J, S, S]
    peak_i, peak_j = np.divmod(scores.reshape(len(scores), -1).argmax(1), len(shifts))
    edge = len(shifts) - 1
    norms = np.sqrt((new * new).sum((1, 2)) * (old * old).sum((1, 2)))
    out: list[tuple[float, float] | None] = []
    for k, (i, j) in enumerate(zip(peak_i.tolist(), peak_j.tolist())):
        if i in (0, edge) or j in (0, edge):
            out.append(None)           # faster than max_speed, or registered onto something else
            continue
        s = scores[k]
        if norms[k] <= 0 or s[i, j] / norms[k] < min_correlation:
            out.append(None)
            continue
        out.append((shifts[i] + _parabola(s[i - 1, j], s[i, j], s[i + 1, j]),
                    shifts[j] + _parabola(s[i, j - 1], s[i, j], s[i, j + 1])))
    return out


class _PointIndex:
    """Points bucketed on a coarse BEV grid (cells sorted x-major, then y), so a box reads only nearby
    points, as a few contiguous slices (one per grid column) rather than a gathered index list."""

    CELL = 4.0

    def __init__(self, xyz: np.ndarray, sweep: np.ndarray):
        ix = np.floor(xyz[:, 0] / self.CELL).astype(np.int64)     # CELL is a power of two: exact in fp32
        iy = np.floor(xyz[:, 1] / self.CELL).astype(np.int64)
        self.x0, self.y0 = int(ix.min()), int(iy.min())
        self.ny = int(iy.max()) - self.y0 + 1
        key = (ix - self.x0) * self.ny + (iy - self.y0)
        # Few cells (~750 for +-54 m): 16-bit keys get numpy's O(N) radix sort instead of a merge sort.
        order = np.argsort(key.astype(np.int16) if key.max() < 2**15 else key, kind="stable")
        self.key = key[order]
        self.xyz = xyz[order].astype(np.float64)
        self.sweep = sweep[order]

    def near(self, x: float, y: float, reach: float) -> tuple[np.ndarray, np.ndarray]:
        """(xyz, sweep) of the points in the cells overlapping the square of half-size ``reach`` around
        (x, y)."""
        ix0 = max(int(np.floor((x - reach) / self.CELL)) - self.x0, 0)
        ix1 = int(np.floor((x + reach) / self.CELL)) - self.x0
        iy0 = max(int(np.floor((y - reach) / self.CELL)) - self.y0, 0)
        iy1 = min(int(np.floor((y + reach) / self.CELL)) - self.y0, self.ny - 1)
        rows = np.arange(ix0, ix1 + 1) * self.ny
        if iy1 < iy0 or len(rows) == 0:
            return self.xyz[:0], self.sweep[:0]
        starts = np.searchsorted(self.key, rows + iy0, side="left")
        stops = np.searchsorted(self.key, rows + iy1, side="right")
        spans = [(a, b) for a, b in zip(starts.tolist(), stops.tolist()) if b > a]
        if len(spans) <= 1:
            a, b = spans[0] if spans else (0, 0)
            return self.xyz[a:b], self.sweep[a:b]
        return (np.concatenate([self.xyz[a:b] for a, b in spans]),
                np.concatenate([self.sweep[a:b] for a, b in spans]))


def _sweep_tags(dt: np.ndarray, tolerance: float) -> tuple[np.ndarray, float, float]:
    """Per point 0 (newest sweep), 1 (the sweep nearest the middle of the span), 2 (oldest), -1 (other);
    and the time from the newest to the middle and to the oldest sweep (middle 0 when there is none)."""
    newest, oldest = float(dt.min()), float(dt.max())
    tags = np.full(len(dt), -1, np.int64)
    tags[dt <= newest + tolerance] = 0
    tags[dt >= oldest - tolerance] = 2
    # Sweeps are runs of equal Δt: every distinct value starts a run, so the values at run starts are all
    # of them (O(N), where np.unique over all points would sort them).
    starts = np.flatnonzero(np.r_[True, dt[1:] != dt[:-1]])
    values = np.unique(dt[starts])
    others = values[(values > newest + tolerance) & (values < oldest - tolerance)]
    middle = 0.0
    if len(others):
        pick = float(others[np.argmin(np.abs(others - (newest + oldest) / 2))])
        tags[np.abs(dt - pick) <= tolerance] = 1
        middle = pick - newest
    return tags, middle, oldest - newest


def point_velocities(points: np.ndarray, boxes: np.ndarray, labels: np.ndarray, config: PointVelocityConfig,
                     scores: np.ndarray | None = None) -> PointVelocityResult:
    """Velocities of ``boxes`` [M, 9] (x, y, z, l, w, h, yaw, vx, vy; same frame as ``points``) measured
    from ``points`` [N, 5] (x, y, z, intensity, Δt in seconds, 0 = newest sweep). With ``scores``, boxes
    below ``config.min_score`` are skipped (cost grows with boxes; the lowest-scored are mostly false)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
    velocity = boxes[:, 7:9].copy()
    measured = np.zeros(len(boxes), bool)
    points = np.asarray(points)
    if len(boxes) == 0 or points.ndim != 2 or points.shape[1] < 5 or len(points) == 0:
        return PointVelocityResult(velocity, measured)
    if not np.isfinite(points[:, :5].sum(dtype=np.float64)):
        points = points[np.isfinite(points[:, :5]).all(1)]      # the per-row mask only when something is off
    if len(points) == 0:
        return PointVelocityResult(velocity, measured)
    tags, middle, span = _sweep_tags(points[:, 4].astype(np.float64), config.sweep_tolerance_s)
    if span <= config.sweep_tolerance_s:
        return PointVelocityResult(velocity, measured)       # one sweep: nothing to register
    moving = np.isin(labels, [DETECTION_CLASSES.index(c) for c in MOVING_CLASSES])
    moving &= np.isfinite(boxes[:, :7]).all(1) & (boxes[:, 3:6] > 0).all(1)
    if scores is not None:
        moving &= np.asarray(scores) >= config.min_score
    if not moving.any():
        return PointVelocityResult(velocity, measured)
    # Every box keeps only points from its bottom + ground_clearance to its top + _TOP_MARGIN_M; points
    # outside all boxes' bands are dropped once here rather than once per box.
    low = float(np.min(boxes[moving, 2] - boxes[moving, 5] / 2)) + config.ground_clearance
    high = float(np.max(boxes[moving, 2] + boxes[moving, 5] / 2)) + _TOP_MARGIN_M
    keep = (tags >= 0) & (points[:, 2] >= low) & (points[:, 2] < high)
    if not keep.any():
        return PointVelocityResult(velocity, measured)
    max_shift = config.max_speed * span
    candidates = np.nonzero(moving)[0]
    halves = np.column_stack([boxes[candidates, 3] / 2, boxes[candidates, 4] / 2]) + max_shift + config.margin
    reaches = np.hypot(halves[:, 0], halves[:, 1])
    index = _PointIndex(points[keep, :3], tags[keep])
    # (sweep, time from the newest, search range in bins) of each registration; the middle sweep, where
    # there is one, is a second, independent measurement that must agree with the first.
    pairs = [(2, span, int(np.ceil(max_shift / config.bin_m)))]
    if middle > config.sweep_tolerance_s:
        pairs.append((1, middle, int(np.ceil(config.max_speed * middle / config.bin_m))))
    # Pass 1: each box's sweep histograms; registrations queued by (FFT size, window) for batched FFTs.
    queued: dict[tuple, list[tuple[int, int, np.ndarray, np.ndarray]]] = {}
    wanted: dict[int, int] = {}                   # box -> registrations it needs
    for k, half, reach in zip(candidates.tolist(), halves.tolist(), reaches.tolist()):
        x, y, z, length, width, height, yaw = boxes[k, :7]
        xyz, sweep = index.near(x, y, reach)
        if len(xyz) < 2 * config.min_points:
            continue
        # Ground returns are static and would pull the registration to zero.
        level = (xyz[:, 2] >= z - height / 2 + config.ground_clearance) & \
            (xyz[:, 2] < z + height / 2 + _TOP_MARGIN_M)
        xyz, sweep = xyz[level], sweep[level]
        ux, uy = np.cos(yaw), np.sin(yaw)
        dx, dy = xyz[:, 0] - x, xyz[:, 1] - y
        along = dx * ux + dy * uy
        across = -dx * uy + dy * ux
        inside = (np.abs(along) < half[0]) & (np.abs(across) < half[1])
        along, across, sweep = along[inside], across[inside], sweep[inside]
        counts = np.bincount(sweep, minlength=3)
        if counts[0] < config.min_points or counts[2] < config.min_points:
            continue
        hist = _occupancy(along, across, sweep, tuple(half), config.bin_m)
        wanted[k] = 0
        for number, (other, _, max_bins) in enumerate(pairs):
            if counts[other] >= config.min_points:
                size = _fft_size(hist.shape[1:], max_bins)
                queued.setdefault((size, max_bins), []).append((k, number, hist[0], hist[other]))
                wanted[k] += 1
    # Pass 2: the registrations, then each box's checks (every registration must succeed, and the middle
    # sweep's must agree with the oldest's).
    found: dict[int, dict[int, np.ndarray]] = {k: {} for k in wanted}
    for (size, max_bins), jobs in queued.items():
        shape = np.max([job[2].shape for job in jobs], axis=0)
        new = np.zeros((len(jobs), *shape))
        old = np.zeros((len(jobs), *shape))
        for row, (_, _, a, b) in enumerate(jobs):
            new[row, :a.shape[0], :a.shape[1]] = a
            old[row, :b.shape[0], :b.shape[1]] = b
        for (k, number, _, _), shift in zip(jobs, _best_shifts(new, old, max_bins, config.min_correlation,
                                                               size)):
            if shift is not None:
                found[k][number] = np.asarray(shift) * config.bin_m / pairs[number][1]
    for k, estimates in found.items():
        if len(estimates) < wanted[k]:
            continue                   # a registration failed: the box keeps the network's velocity
        first = estimates[0]
        if len(estimates) == 2 and np.hypot(*(first - estimates[1])) > \
                config.consistency_abs + config.consistency_rel * np.hypot(*first):
            continue
        yaw = boxes[k, 6]
        ux, uy = np.cos(yaw), np.sin(yaw)
        velocity[k] = (first[0] * ux - first[1] * uy, first[0] * uy + first[1] * ux)
        measured[k] = True
    return PointVelocityResult(velocity, measured)
