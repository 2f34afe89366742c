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
import scipy.fft

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


def _occupancies(box: np.ndarray, along: np.ndarray, across: np.ndarray, sweep: np.ndarray,
                 halves: np.ndarray, wanted: np.ndarray, bin_m: float) -> dict[int, np.ndarray]:
    """Per box b with ``wanted[b]``: the BEV occupancy [3, n_along, n_across] of its newest, middle and
    oldest sweep (0, 1, 2) from its points (``box`` == b) at (``along``, ``across``) in its frame, each point
    splatted bilinearly onto its four nearest cell centres: a sub-cell shift of the points then shifts the
    histogram smoothly, where hard binning would snap edges to cell borders and bias the registration
    by up to half a cell. Every box's histogram lies in one flat array (one bincount for all of them)."""
    n_along = (2 * halves[:, 0] / bin_m).astype(np.int64) + 2
    n_across = (2 * halves[:, 1] / bin_m).astype(np.int64) + 2
    sizes = np.where(wanted, 3 * n_along * n_across, 0)
    offsets = np.cumsum(sizes) - sizes
    fa = np.clip((along + halves[box, 0]) / bin_m, 0.0, n_along[box] - 1.001)
    fc = np.clip((across + halves[box, 1]) / bin_m, 0.0, n_across[box] - 1.001)
    ia, ic = fa.astype(np.int64), fc.astype(np.int64)
    wa, wc = fa - ia, fc - ic
    cols = n_across[box]
    base = offsets[box] + (sweep * n_along[box] + ia) * cols + ic
    index = np.concatenate([base, base + 1, base + cols, base + cols + 1])
    weight = np.concatenate([(1 - wa) * (1 - wc), (1 - wa) * wc, wa * (1 - wc), wa * wc])
    flat = np.bincount(index, weight, minlength=int(sizes.sum()))
    return {b: flat[offsets[b]:offsets[b] + sizes[b]].reshape(3, n_along[b], n_across[b])
            for b in np.flatnonzero(wanted).tolist()}


def _parabola(y0: float, y1: float, y2: float) -> float:
    """Sub-cell offset of the vertex of the parabola through three samples around a maximum."""
    curvature = y0 - 2 * y1 + y2
    return max(-0.5, min(0.5, 0.5 * float(y0 - y2) / float(curvature))) if curvature < 0 else 0.0


def _fft_size(shape: tuple[int, int], max_bins: int) -> tuple[int, int]:
    """FFT size holding a histogram and the search window without wrap-around: the next 5-smooth length
    (pocketfft is as fast on those; rounding up to powers of two doubled the work on average)."""
    return tuple(scipy.fft.next_fast_len(n + max_bins + 1, real=True) for n in shape)


def _best_shifts(corr: np.ndarray, norms: np.ndarray, max_bins: int, min_correlation: float
                 ) -> list[tuple[float, float] | None]:
    """Per registration j, from the circular cross-correlation ``corr[j]`` (sum new[a, c] * old[a - sa,
    c - sc] at (sa, sc), of histograms zero-padded enough not to wrap within the window) and ``norms[j]``
    (the product of the histograms' L2 norms): the shift (sa, sc) in cells, sub-cell, maximizing it over
    |sa|, |sc| <= max_bins; None when the peak is on the window's edge or too weak."""
    size = corr.shape[1:]
    shifts = np.arange(-max_bins, max_bins + 1)
    scores = corr[:, (shifts % size[0])[:, None], (shifts % size[1])[None, :]].astype(np.float64)  # [J, S, S]
    peak_i, peak_j = np.divmod(scores.reshape(len(scores), -1).argmax(1), len(shifts))
    edge = len(shifts) - 1
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
    """Points bucketed on a coarse BEV grid (cells sorted x-major, then y), so the boxes read only nearby
    points, as contiguous slices (one per box and grid column) rather than a test of every point."""

    CELL = 4.0

    def __init__(self, points: np.ndarray, sweep: np.ndarray, rows: np.ndarray):
        """``points`` [N, >=3], of which ``rows`` (indices) are indexed, with their ``sweep`` tags [N]."""
        x, y = points[rows, 0], points[rows, 1]
        ix = np.floor(x / self.CELL).astype(np.int64)     # CELL is a power of two: exact in fp32
        iy = np.floor(y / self.CELL).astype(np.int64)
        self.x0, self.y0 = int(ix.min()), int(iy.min())
        self.ny = int(iy.max()) - self.y0 + 1
        key = (ix - self.x0) * self.ny + (iy - self.y0)
        # Few cells (~750 for +-54 m): 16-bit keys get numpy's O(N) radix sort instead of a merge sort.
        order = np.argsort(key.astype(np.int16) if key.max() < 2**15 else key, kind="stable")
        self.key = key[order]
        rows = rows[order]
        self.xyz = points[rows, :3]    # the input's dtype: gathers promote exactly to float64 where needed
        self.sweep = sweep[rows]

    def pairs(self, x: np.ndarray, y: np.ndarray, reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(box, point) index pairs: for each box b, the points in the cells overlapping the square of
        half-size ``reach[b]`` around (``x[b]``, ``y[b]``), in index order. Loop-free: one searchsorted
        for every (box, grid column), then the slices expanded with repeat/cumsum."""
        ix0 = np.maximum(np.floor((x - reach) / self.CELL).astype(np.int64) - self.x0, 0)
        ix1 = np.floor((x + reach) / self.CELL).astype(np.int64) - self.x0
        iy0 = np.maximum(np.floor((y - reach) / self.CELL).astype(np.int64) - self.y0, 0)
        iy1 = np.minimum(np.floor((y + reach) / self.CELL).astype(np.int64) - self.y0, self.ny - 1)
        n_rows = np.where(iy1 >= iy0, np.maximum(ix1 - ix0 + 1, 0), 0)
        box = np.repeat(np.arange(len(x)), n_rows)
        row = ix0[box] + np.arange(len(box)) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
        starts = np.searchsorted(self.key, row * self.ny + iy0[box], side="left")
        lengths = np.maximum(np.searchsorted(self.key, row * self.ny + iy1[box], side="right") - starts, 0)
        total = int(lengths.sum())
        first = np.cumsum(lengths) - lengths
        point = np.repeat(starts - first, lengths) + np.arange(total)
        return np.repeat(box, lengths), point


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
    index = _PointIndex(points, tags, np.flatnonzero(keep))
    # (sweep, time from the newest, search range in bins) of each registration; the middle sweep, where
    # there is one, is a second, independent measurement that must agree with the first.
    pairs = [(2, span, int(np.ceil(max_shift / config.bin_m)))]
    if middle > config.sweep_tolerance_s:
        pairs.append((1, middle, int(np.ceil(config.max_speed * middle / config.bin_m))))
    # Pass 1, for every (box, nearby point) pair at once (a per-box loop of small numpy calls cost more
    # than the arithmetic): each box's points in its height band and grown footprint, in its frame.
    cand = boxes[candidates]
    box, point = index.pairs(cand[:, 0], cand[:, 1], reaches)
    z = index.xyz[point, 2]
    # Ground returns are static and would pull the registration to zero.
    level = (z >= (cand[:, 2] - cand[:, 5] / 2 + config.ground_clearance)[box]) & \
        (z < (cand[:, 2] + cand[:, 5] / 2 + _TOP_MARGIN_M)[box])
    box, point = box[level], point[level]
    ux, uy = np.cos(cand[:, 6])[box], np.sin(cand[:, 6])[box]
    dx, dy = index.xyz[point, 0] - cand[box, 0], index.xyz[point, 1] - cand[box, 1]
    along = dx * ux + dy * uy
    across = -dx * uy + dy * ux
    inside = (np.abs(along) < halves[box, 0]) & (np.abs(across) < halves[box, 1])
    box, along, across, sweep = box[inside], along[inside], across[inside], index.sweep[point[inside]]
    counts = np.bincount(box * 3 + sweep, minlength=3 * len(candidates)).reshape(-1, 3)
    usable = (counts[:, 0] >= config.min_points) & (counts[:, 2] >= config.min_points)
    pick = usable[box]
    hists = _occupancies(box[pick], along[pick], across[pick], sweep[pick], halves, usable, config.bin_m)
    # Pass 2: the registrations, batched by FFT size (one transform per sweep histogram: the newest
    # sweep's serves both registrations), then each box's checks (every registration must succeed, and
    # the middle sweep's must agree with the oldest's).
    wanted = {int(candidates[b]): sum(int(counts[b, other] >= config.min_points) for other, _, _ in pairs)
              for b in np.flatnonzero(usable).tolist()}             # box -> registrations it needs
    found: dict[int, dict[int, np.ndarray]] = {k: {} for k in wanted}
    groups: dict[tuple[int, int], list[int]] = {}
    for b, hist in hists.items():
        groups.setdefault(_fft_size(hist.shape[1:], pairs[0][2]), []).append(b)
    channels = [0] + [other for other, _, _ in pairs]                # newest, oldest[, middle]
    for size, members in groups.items():
        shape = np.max([hists[b].shape[1:] for b in members], axis=0)
        stack = np.zeros((len(members), len(channels), *shape))
        for row, b in enumerate(members):
            hist = hists[b]
            stack[row, :, :hist.shape[1], :hist.shape[2]] = hist[channels]
        spectra = scipy.fft.rfft2(stack.astype(np.float32), size)
        energy = (stack * stack).sum((2, 3))
        for number, (other, span_s, max_bins) in enumerate(pairs):
            rows = [row for row, b in enumerate(members) if counts[b, other] >= config.min_points]
            if not rows:
                continue
            corr = scipy.fft.irfft2(spectra[rows, 0] * np.conj(spectra[rows, number + 1]), size)
            norms = np.sqrt(energy[rows, 0] * energy[rows, number + 1])
            for row, shift in zip(rows, _best_shifts(corr, norms, max_bins, config.min_correlation)):
                if shift is not None:
                    found[int(candidates[members[row]])][number] = np.asarray(shift) * config.bin_m / span_s
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
