"""SemAlign calibrator: semantic alignment loss -> loss-guided coarse search -> gradient refinement.

Unknowns (``CalibrationConfig.mode``):
- ``"per_camera"`` (default): each camera's ``T_cam_lidar`` is calibrated independently, from that
  camera's views in all frames. This is the general case (any camera may have been bumped).
- ``"rig"``: the camera rig is trusted and one transform is shared: the LiDAR's pose relative to the rig.
  With A_i = prior T_cam_i_lidar, every camera sees T_cam_i_lidar = A_i @ X and X (identity at the prior,
  increments about the LiDAR origin) is calibrated from all cameras at once. Much better conditioned for
  translation: a shift along one camera's optical axis (weakly observable in that camera) is lateral in
  another's.

``calibrate(frames, prior) -> CalibrationResult``: the result always carries a usable set of extrinsics.
Where the optimizer does not beat the prior's loss (or input is unusable), the prior is kept for that
camera/rig and ``reason`` says why; ``success`` is True only when something better was found.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from bevfusion_ros.calibration import lie
from bevfusion_ros.calibration.fields import FieldLevel
from bevfusion_ros.calibration.loss import AlignmentProblem, alignment_loss, visible_fraction
from bevfusion_ros.calibration.problem import CalibrationInputError, ProblemOptions, build_problem, reselect_points
from bevfusion_ros.calibration.refine import RefineStage, refine
from bevfusion_ros.calibration.search import SearchRound, coarse_search
from bevfusion_ros.calibration.semantics import SemanticFrame

DEFAULT_LEVELS = (FieldLevel(downsample=8, tau_px=150.0, soft_px=12.0),
                  FieldLevel(downsample=4, tau_px=40.0, soft_px=4.0),
                  FieldLevel(downsample=2, tau_px=12.0, soft_px=1.5))

# Preset for box-derived labels (BoxLabelProvider, e.g. the real keyframe's evaluation): a box's image region
# is larger than the object by several pixels to metres, so where in a region a point may lie is uncertain
# far beyond the 1.5 px soft border meant for exact masks. Search and refinement use wide soft borders, which
# centre each box's points in its region: that pins the translation (real keyframe, 8 trials: 10.0 cm with
# the default levels, 4.3 cm with 24 / 16 / 12 px) but biases rotation (0.30 -> 0.62 deg), so the polish
# stage refines the rotation alone on sharp borders (an extra fine level with the default 1.5 px), translation
# held: 0.27 deg / 3.6 cm. On exact masks (synthetic ground truth) wide borders only cost precision (0.018 deg /
# 0.51 cm -> 0.062 deg / 0.83 cm with 8 / 6 px), hence a preset and not the default.
BOX_LABEL_PRESET: dict = {
    "levels": (FieldLevel(downsample=8, tau_px=150.0, soft_px=24.0),
               FieldLevel(downsample=4, tau_px=40.0, soft_px=16.0),
               FieldLevel(downsample=2, tau_px=12.0, soft_px=12.0),
               FieldLevel(downsample=2, tau_px=12.0, soft_px=1.5)),
    "polish": RefineStage(level=3, iterations=100, lr_rot_deg=0.05, lr_trans_m=0.0),
}


@dataclass
class CalibrationConfig:
    """All knobs of SemAlign (serializable: ``asdict`` / ``from_dict``)."""

    mode: str = "per_camera"                 # "per_camera" | "rig"
    rot_range_deg: float = 12.0              # coarse search half-range per rotation-vector axis
    trans_range_m: float = 0.6               # coarse search half-range per translation axis
    levels: tuple[FieldLevel, ...] = DEFAULT_LEVELS
    search: tuple[SearchRound, ...] = (
        SearchRound(samples=2048, scale=1.0, level=0, max_points=96, keep=12),
        SearchRound(samples=48, scale=0.25, level=1, max_points=192, keep=6),
        SearchRound(samples=48, scale=0.08, level=2, max_points=256, keep=3),
    )
    refine: tuple[RefineStage, ...] = (
        RefineStage(level=1, iterations=60, lr_rot_deg=0.3, lr_trans_m=0.02, max_points=384),
        RefineStage(level=2, iterations=120, lr_rot_deg=0.1, lr_trans_m=0.01),
    )
    # Last step: the points are selected again (field of view, occlusion) around the refined estimate, and
    # the best candidate is refined once more on all of them (None: skip). See problem.reselect_points.
    polish: RefineStage | None = RefineStage(level=2, iterations=100, lr_rot_deg=0.05, lr_trans_m=0.005)
    max_points_per_group: int = 768
    # Point budget: with more (frame, camera, class) groups than this, every search round and refinement
    # stage uses proportionally fewer points per group (never below min_budget_points), so the cost of a
    # calibration stays bounded as frames and cameras are added (rig mode over 6 cameras x 5 frames has
    # ~200 groups).
    budget_groups: int = 48
    min_budget_points: int = 24
    min_points_per_group: int = 8
    ignore_classes: tuple[int, ...] = ()
    occlusion_filter: bool = True
    occluder_lift_deg: float = 1.5           # see ProblemOptions: blind band above off-ground occluders
    visible_floor: float = 0.03              # loss.py: below this fraction of a group in view, chance fills in
    min_improvement: float = 0.0             # relative: accept only if loss < prior_loss * (1 - this)
    min_visible_fraction: float = 0.02       # refuse results that see (almost) nothing
    seed: int = 0
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "CalibrationConfig":
        data = dict(data)
        if "levels" in data:
            data["levels"] = tuple(FieldLevel(**lv) if isinstance(lv, dict) else lv for lv in data["levels"])
        if "search" in data:
            data["search"] = tuple(SearchRound(**r) if isinstance(r, dict) else r for r in data["search"])
        if "refine" in data:
            data["refine"] = tuple(RefineStage(**r) if isinstance(r, dict) else r for r in data["refine"])
        if isinstance(data.get("polish"), dict):
            data["polish"] = RefineStage(**data["polish"])
        for key in ("ignore_classes",):
            if key in data:
                data[key] = tuple(data[key])
        unknown = set(data) - set(CalibrationConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown calibration config keys: {sorted(unknown)}")
        return CalibrationConfig(**data)


@dataclass
class UnitResult:
    """Result for one unknown (one camera, or the rig)."""

    name: str
    cameras: list[str]
    T: np.ndarray                     # the unknown: T_cam_lidar (per camera) or X (rig, identity = prior)
    loss: float
    prior_loss: float
    confidence: float
    improved: bool
    reason: str
    candidates_evaluated: int = 0
    groups: int = 0
    spread_deg: float = float("nan")
    spread_m: float = float("nan")


@dataclass
class CalibrationResult:
    """``T``: camera name -> calibrated T_cam_lidar (the prior where nothing better was found)."""

    T: dict[str, np.ndarray]
    loss: float
    prior_loss: float
    confidence: float
    duration: float
    reason: str
    success: bool
    units: list[UnitResult] = field(default_factory=list)

    @property
    def improved_cameras(self) -> list[str]:
        return [cam for unit in self.units if unit.improved for cam in unit.cameras]


def _validate_transform(name: str, T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, np.float64)
    if not lie.is_rigid(T):
        raise CalibrationInputError(f"prior extrinsic of {name} is not a finite rigid 4x4 transform")
    return T


class Calibrator:
    """Runs SemAlign on semantic frames. Stateless between calls (safe to reuse)."""

    def __init__(self, config: CalibrationConfig | None = None, device: str = "cpu"):
        self.config = config or CalibrationConfig()
        if self.config.mode not in ("per_camera", "rig"):
            raise ValueError(f"calibration mode must be 'per_camera' or 'rig', got {self.config.mode!r}")
        self.device = torch.device(device)

    # ------------------------------------------------------------------ public

    def calibrate(self, frames: Sequence[SemanticFrame], prior: dict[str, np.ndarray],
                  cameras: Sequence[str] | None = None) -> CalibrationResult:
        start = time.perf_counter()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        cameras = list(cameras or prior.keys())
        try:
            if not frames:
                raise CalibrationInputError("no frames to calibrate from")
            if not cameras:
                raise CalibrationInputError("no cameras to calibrate")
            prior = {name: _validate_transform(name, prior[name]) for name in cameras}
        except CalibrationInputError as err:
            return CalibrationResult(T={k: np.asarray(v, np.float64) for k, v in prior.items()}, loss=math.nan,
                                     prior_loss=math.nan, confidence=0.0, duration=time.perf_counter() - start,
                                     reason=str(err), success=False)
        units: list[UnitResult] = []
        result_T = dict(prior)
        if self.config.mode == "per_camera":
            for name in cameras:
                unit = self._calibrate_unit(frames, [name], prior, left=None, base=prior[name])
                units.append(unit)
                result_T[name] = unit.T
        else:
            unit = self._calibrate_unit(frames, cameras, prior, left=prior, base=np.eye(4), name="rig")
            units.append(unit)
            for cam in cameras:
                result_T[cam] = prior[cam] @ unit.T
        finite = [u for u in units if math.isfinite(u.loss)]
        loss = float(np.mean([u.loss for u in finite])) if finite else math.nan
        prior_loss = float(np.mean([u.prior_loss for u in finite])) if finite else math.nan
        confidence = float(np.mean([u.confidence for u in units])) if units else 0.0
        success = any(u.improved for u in units)
        reason = "; ".join(f"{u.name}: {u.reason}" for u in units)
        return CalibrationResult(T=result_T, loss=loss, prior_loss=prior_loss, confidence=confidence,
                                 duration=time.perf_counter() - start, reason=reason, success=success, units=units)

    def evaluate_loss(self, frames: Sequence[SemanticFrame], extrinsics: dict[str, np.ndarray],
                      cameras: Sequence[str] | None = None, level: int = -1) -> float:
        """The loss of given extrinsics (per camera, averaged): how the node scores the current calibration."""
        cameras = list(cameras or extrinsics.keys())
        values = []
        for name in cameras:
            problem = self._problem(frames, [name], {name: extrinsics[name]}, None)
            T = torch.from_numpy(np.asarray(extrinsics[name], np.float64))[None].float()
            values.append(float(alignment_loss(problem, T.to(self.device), len(problem.fields) - 1 if level < 0 else level)))
        return float(np.mean(values))

    # ------------------------------------------------------------------ internals

    def _options(self) -> ProblemOptions:
        cfg = self.config
        return ProblemOptions(levels=cfg.levels, max_points_per_group=cfg.max_points_per_group,
                                 min_points_per_group=cfg.min_points_per_group,
                                 ignore_classes=cfg.ignore_classes, occlusion_filter=cfg.occlusion_filter,
                                 occluder_lift_deg=cfg.occluder_lift_deg, visible_floor=cfg.visible_floor,
                                 seed=cfg.seed)

    def _loss_fn(self, problem: AlignmentProblem):
        """``loss_fn(transforms [K, 4, 4], level, max_points) -> [K]`` on the CPU, for ``problem`` (bound
        now: the search, refinement and final scores each name the problem they score)."""
        def loss_fn(transforms: torch.Tensor, level: int, max_points: int | None) -> torch.Tensor:
            return alignment_loss(problem, transforms.to(self.device), level, max_points).cpu()
        return loss_fn

    def _problem(self, frames, cameras, prior, left) -> AlignmentProblem:
        return build_problem(frames, cameras, prior, self._options(), math.radians(self.config.rot_range_deg),
                             left).to(self.device)

    def _polish(self, problem: AlignmentProblem, frames, cameras, left, best: np.ndarray,
                budget) -> tuple[AlignmentProblem, np.ndarray]:
        """Re-select the points around the estimate ``best`` and refine it once more on all of them.
        Returns the re-selected problem (the final scores are taken on it, for result and prior alike) and
        the polished estimate."""
        stage = self.config.polish
        estimate = {cam: (best if left is None else left[cam] @ best) for cam in cameras}
        problem = reselect_points(problem, frames, estimate, self._options(), math.radians(2.0))
        if stage.iterations <= 0:
            return problem, best

        stage = dataclasses.replace(stage, level=min(stage.level, len(problem.fields) - 1),
                                    max_points=budget(stage.max_points) if stage.max_points else None)
        polished = refine(self._loss_fn(problem), torch.from_numpy(best)[None], (stage,))
        return problem, polished[0].numpy()

    def _calibrate_unit(self, frames, cameras, prior, left, base, name=None) -> UnitResult:
        cfg = self.config
        name = name or cameras[0]
        try:
            problem = self._problem(frames, cameras, prior, left)
        except CalibrationInputError as err:
            return UnitResult(name, cameras, base, math.nan, math.nan, 0.0, False, str(err))
        fine = len(problem.fields) - 1

        scale = min(1.0, cfg.budget_groups / max(1, problem.num_groups))

        def budget(points: int | None) -> int | None:
            points = points if points is not None else cfg.max_points_per_group
            return max(cfg.min_budget_points, int(points * scale)) if scale < 1.0 else points

        search_rounds = tuple(dataclasses.replace(r, max_points=budget(r.max_points)) for r in cfg.search)
        refine_stages = tuple(dataclasses.replace(r, max_points=budget(r.max_points)) for r in cfg.refine)

        loss_fn = self._loss_fn(problem)
        base_t = torch.from_numpy(np.asarray(base, np.float64))
        with torch.no_grad():
            prior_loss = float(loss_fn(base_t[None].float(), fine, None)[0])
        chunk = max(8, int(4_000_000 // max(1, problem.num_groups * 128)))
        survivors, _, evaluated = coarse_search(loss_fn, base_t, math.radians(cfg.rot_range_deg), cfg.trans_range_m,
                                                search_rounds, seed=cfg.seed, chunk=chunk)
        refined = refine(loss_fn, survivors, refine_stages)
        with torch.no_grad():
            final_losses = loss_fn(refined.float(), fine, None).double()
        order = torch.argsort(final_losses)
        best = refined[order[0]].numpy()
        best_loss = float(final_losses[order[0]])
        visible = float(visible_fraction(problem, torch.from_numpy(best)[None].float().to(self.device))[0])
        spread_deg, spread_m = _spread(refined.numpy(), final_losses.numpy(), best, best_loss)
        if cfg.polish is not None:
            problem, best = self._polish(problem, frames, cameras, left, best, budget)
            with torch.no_grad():
                pair = torch.from_numpy(np.stack([best, np.asarray(base, np.float64)])).float()
                best_loss, prior_loss = (float(v) for v in self._loss_fn(problem)(pair, fine, None))
        chance = float(_chance_loss(problem, fine))
        confidence = _confidence(best_loss, chance, spread_deg, spread_m)
        common = dict(candidates_evaluated=evaluated, groups=problem.num_groups, spread_deg=spread_deg,
                      spread_m=spread_m)
        if not (math.isfinite(best_loss) and lie.is_rigid(best)):
            return UnitResult(name, cameras, base, prior_loss, prior_loss, 0.0, False,
                              "optimizer produced an invalid transform; prior kept", **common)
        if visible < cfg.min_visible_fraction:
            return UnitResult(name, cameras, base, prior_loss, prior_loss, 0.0, False,
                              f"result sees only {visible:.1%} of the points; prior kept", **common)
        if not best_loss < prior_loss * (1.0 - cfg.min_improvement):
            return UnitResult(name, cameras, base, prior_loss, prior_loss, confidence, False,
                              f"no improvement over the prior (loss {best_loss:.4f} >= {prior_loss:.4f}); prior kept",
                              **common)
        return UnitResult(name, cameras, best, best_loss, prior_loss, confidence, True,
                          f"loss {prior_loss:.4f} -> {best_loss:.4f}", **common)


def _chance_loss(problem: AlignmentProblem, level: int) -> float:
    gw = problem.group_weights
    return float((problem.chance[level].cpu() * gw.cpu()).sum() / gw.sum())


def _spread(refined: np.ndarray, losses: np.ndarray, best: np.ndarray, best_loss: float) -> tuple[float, float]:
    """Largest distance from the best of the refined candidates whose loss is within 5% of the best."""
    rot, trans = 0.0, 0.0
    for T, value in zip(refined, losses):
        if value <= best_loss * 1.05 + 1e-9:
            r, t, _, _ = lie.transform_error(T, best)
            rot, trans = max(rot, r), max(trans, t)
    return rot, trans


def _confidence(loss: float, chance: float, spread_deg: float, spread_m: float) -> float:
    """In [0, 1]: how far below chance the loss is, discounted when near-equal minima disagree."""
    if not (math.isfinite(loss) and chance > 0):
        return 0.0
    contrast = max(0.0, 1.0 - loss / chance)
    agreement = 1.0 / (1.0 + (spread_deg / 0.5) ** 2 + (spread_m / 0.05) ** 2)
    return float(np.clip(contrast * agreement, 0.0, 1.0))
