"""Semantic label providers: turn a dataset frame into a :class:`SemanticFrame` (per-point LiDAR classes,
per-pixel image class maps).

- :class:`BoxLabelProvider` — labels derived from 3D boxes, usable on any dataset with 3D annotations.
  LiDAR: points inside a box get the box's class; points near the fitted ground plane (within
  ``ground_range_m``) get ``GROUND``; the rest is unlabeled. Image: the pixels whose viewing ray meets that
  ground plane within the same range are ``GROUND``; boxes are drawn over it as filled convex hulls of their
  projected volume, far to near (z-ordered). With ``amodal`` (default) each class's region also includes
  what is drawn over it (``CameraSemantics.extra_masks``): hulls overstate how much a box hides. With
  ``instance_labels`` every box is its own class on both sides (the real keyframe's evaluation). The image side is rendered with the dataset's own reference
  calibration: it stands in for a 2D detector / segmenter, so experiments with it measure the optimizer on
  real LiDAR data, not independence from annotations.
- :class:`SynthGroundTruthProvider` — ground truth of the synthetic nuScenes generator (camera semantic masks
  ``semantic/<version>/<camera sd token>.png`` and lidarseg labels, both in nuScenes lidarseg indices).
- :class:`LidarsegProvider` — nuScenes-lidarseg point labels with image labels from any image provider
  (a user segmentation model, or the box hulls).
- :class:`OnnxSegmentationProvider` — a user-supplied ONNX image segmentation model (onnxruntime).

Every provider returns classes over one shared index set per frame; ``IGNORE`` (-1) marks "no label".
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bevfusion_ros import geometry as geo
from bevfusion_ros.calibration.ground import fit_ground_plane, height_above
from bevfusion_ros.calibration.semantics import IGNORE, CameraSemantics, SemanticFrame
from bevfusion_ros.classes import CAMERA_NAMES, DETECTION_CLASSES
from bevfusion_ros.errors import UserError

# Class set of box-derived labels: the 10 detection classes (their indices), then ground.
GROUND = len(DETECTION_CLASSES)
BOX_LABEL_NAMES: tuple[str, ...] = (*DETECTION_CLASSES, "ground")
INSTANCE_BASE = 100      # BoxLabelProvider(instance_labels=True): box i is class INSTANCE_BASE + i


@dataclass
class CameraView:
    """What a provider needs of one camera besides the image: size, intrinsics, reference extrinsics."""

    name: str
    size: tuple[int, int]          # (width, height)
    intrinsic: np.ndarray          # 3 x 3
    T_cam_lidar: np.ndarray        # 4 x 4 reference calibration (used only to render image-side labels)
    image: np.ndarray | None = None  # H x W x 3 uint8 RGB, for image-based providers


# ----------------------------------------------------------------------------- ground plane


def _ground_region(view: CameraView, plane: np.ndarray, max_range: float, downsample: int = 4) -> np.ndarray:
    """Pixels of the camera whose ray meets the ground plane in front of the camera within max_range
    (horizontal distance from the LiDAR origin)."""
    width, height = view.size
    us = (np.arange(0, width, downsample) + (downsample - 1) / 2.0)
    vs = (np.arange(0, height, downsample) + (downsample - 1) / 2.0)
    grid_u, grid_v = np.meshgrid(us, vs)
    rays_cam = np.linalg.solve(view.intrinsic, np.stack([grid_u, grid_v, np.ones_like(grid_u)], 0).reshape(3, -1))
    T_lidar_cam = geo.invert_transform(view.T_cam_lidar)
    origin = T_lidar_cam[:3, 3]
    rays = T_lidar_cam[:3, :3] @ rays_cam                       # LiDAR frame directions
    denom = plane[:3] @ rays
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = -(plane[:3] @ origin + plane[3]) / denom
    hit = origin[:, None] + rays * lam
    ok = (lam > 0) & np.isfinite(lam) & (np.linalg.norm(hit[:2], axis=0) < max_range)
    small = ok.reshape(len(vs), len(us)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


# ----------------------------------------------------------------------------- box-derived labels


def _box_hulls(box: np.ndarray, view: CameraView, lidar_faces_only: bool, min_depth: float = 0.2
               ) -> list[np.ndarray]:
    """Pixel polygons (int32 [M, 2]) covering the projection of a box: one convex hull of the whole box, or
    (``lidar_faces_only``) one per face turned towards the LiDAR origin — where the LiDAR's points on the
    object can lie. Parts behind the camera are clipped by projecting a dense grid of surface points and
    keeping what is in front."""
    steps = np.linspace(-0.5, 0.5, 6)
    gx, gy, gz = np.meshgrid(steps, steps, steps, indexing="ij")
    unit = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], 1)
    cos, sin = np.cos(box[6]), np.sin(box[6])
    if not lidar_faces_only:
        hull = _project_hull(unit[np.isclose(np.abs(unit), 0.5).any(1)], box, view, min_depth)
        return [] if hull is None else [hull]
    out = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            normal_local = np.zeros(3)
            normal_local[axis] = sign
            normal = np.array([cos * normal_local[0] - sin * normal_local[1],
                               sin * normal_local[0] + cos * normal_local[1], normal_local[2]])
            centre_local = normal_local * 0.5 * box[3:6]
            centre = box[:3] + np.array([cos * centre_local[0] - sin * centre_local[1],
                                         sin * centre_local[0] + cos * centre_local[1], centre_local[2]])
            if normal @ centre >= 0:                  # faces away from the LiDAR at the origin
                continue
            hull = _project_hull(unit[np.isclose(unit[:, axis], 0.5 * sign)], box, view, min_depth)
            if hull is not None:
                out.append(hull)
    return out


def _project_hull(unit: np.ndarray, box: np.ndarray, view: CameraView, min_depth: float) -> np.ndarray | None:
    local = unit * box[3:6]
    cos, sin = np.cos(box[6]), np.sin(box[6])
    pts = np.stack([local[:, 0] * cos - local[:, 1] * sin, local[:, 0] * sin + local[:, 1] * cos, local[:, 2]], 1)
    pts = pts + box[:3]
    cam = pts @ view.T_cam_lidar[:3, :3].T + view.T_cam_lidar[:3, 3]
    cam = cam[cam[:, 2] > min_depth]
    if len(cam) < 3:
        return None
    uv = cam[:, :2] / cam[:, 2:3] * np.array([view.intrinsic[0, 0], view.intrinsic[1, 1]]) + view.intrinsic[:2, 2]
    uv = np.clip(uv, -1e5, 1e5)
    hull = cv2.convexHull(np.round(uv).astype(np.int32))
    return hull[:, 0]


@dataclass
class BoxLabelProvider:
    """Labels derived from 3D boxes (see the module docstring)."""

    ground_range_m: float = 30.0
    ground_threshold_m: float = 0.2
    use_ground: bool = True
    lidar_faces_only: bool = False    # True: only the box faces turned to the LiDAR (measured: ~same masks)
    # Each class's image region is where it *may* be, ignoring what is drawn over it (CameraSemantics.
    # extra_masks): a box hull is much larger than a pedestrian or a bicycle, and the LiDAR sees the truck,
    # the barrier or the ground behind it through the gaps; with exclusive labels those points scored as
    # misplaced at the true extrinsics (real keyframe: 203 of 9,144 ground points and 37 of 465 truck
    # points) and pulled the minimum ~1 deg / 0.35 m away. Points the camera really cannot see are the
    # occlusion filter's job (LiDAR depth test under the current estimate).
    amodal: bool = True
    # Label every box as its own class (INSTANCE_BASE + box index) on both sides: only usable when the image
    # labels are rendered from the same boxes. A row of barriers or a crowd is then not one plateau along
    # which the points can slide.
    instance_labels: bool = False

    def point_labels(self, points: np.ndarray, boxes: np.ndarray, box_classes: np.ndarray,
                     plane: np.ndarray | None) -> np.ndarray:
        labels = np.full(len(points), IGNORE, np.int64)
        xyz = np.asarray(points, np.float64)[:, :3]
        if self.use_ground and plane is not None:
            dist = np.abs(height_above(xyz, plane))
            labels[(dist < self.ground_threshold_m) & (np.linalg.norm(xyz[:, :2], axis=1) < self.ground_range_m)] = GROUND
        if len(boxes):
            inside = geo.points_in_boxes(xyz, boxes)
            hit = inside.any(1)
            labels[hit] = np.asarray(box_classes)[inside[hit].argmax(1)]
        return labels

    def image_labels(self, view: CameraView, boxes: np.ndarray, box_classes: np.ndarray,
                     plane: np.ndarray | None) -> np.ndarray:
        width, height = view.size
        labels = np.full((height, width), IGNORE, np.int16)
        if self.use_ground and plane is not None:
            labels[_ground_region(view, plane, self.ground_range_m)] = GROUND
        if len(boxes):
            centers = boxes[:, :3] @ view.T_cam_lidar[:3, :3].T + view.T_cam_lidar[:3, 3]
            for index in np.argsort(-centers[:, 2]):           # far to near: near boxes end on top
                for hull in _box_hulls(boxes[index], view, self.lidar_faces_only):
                    cv2.fillConvexPoly(labels, hull, int(box_classes[index]))
        return labels

    def amodal_masks(self, view: CameraView, labels: np.ndarray, boxes: np.ndarray, box_classes: np.ndarray,
                     plane: np.ndarray | None) -> dict[int, np.ndarray] | None:
        """Per class, the pixels where it may be although another class is drawn over it (the ground region
        under the boxes, a box's hull behind nearer hulls); only classes with such pixels are listed."""
        if not self.amodal:
            return None
        width, height = view.size
        regions: dict[int, np.ndarray] = {}
        if self.use_ground and plane is not None:
            regions[GROUND] = _ground_region(view, plane, self.ground_range_m)
        for index in range(len(boxes)):
            hulls = _box_hulls(boxes[index], view, self.lidar_faces_only)
            if not hulls:
                continue
            cls = int(box_classes[index])
            region = regions.setdefault(cls, np.zeros((height, width), np.uint8))
            for hull in hulls:
                cv2.fillConvexPoly(region, hull, 1)
        out = {}
        for cls, region in regions.items():
            hidden = region.astype(bool) & (labels != cls)
            if hidden.any():
                out[cls] = hidden
        return out

    def frame(self, points: np.ndarray, boxes: np.ndarray, box_classes: Sequence[int],
              views: Sequence[CameraView], stamp_us: int = 0) -> SemanticFrame:
        boxes = np.asarray(boxes, np.float64).reshape(-1, boxes.shape[-1] if len(boxes) else 7)
        box_classes = np.asarray(box_classes, np.int64)
        if self.instance_labels:
            box_classes = INSTANCE_BASE + np.arange(len(boxes), dtype=np.int64)
        plane = None
        if self.use_ground:
            try:
                plane = fit_ground_plane(points)
            except ValueError:
                plane = None
        cams = {}
        for view in views:
            labels = self.image_labels(view, boxes, box_classes, plane)
            cams[view.name] = CameraSemantics(view.name, labels, view.intrinsic,
                                              extra_masks=self.amodal_masks(view, labels, boxes, box_classes, plane))
        return SemanticFrame(points=np.asarray(points, np.float32)[:, :3],
                             point_labels=self.point_labels(points, boxes, box_classes, plane),
                             cameras=cams, stamp_us=stamp_us)


# ----------------------------------------------------------------------------- the real nuScenes keyframe


@dataclass
class SampleRecord:
    """The real keyframe of ../shared/data/nuscenes-sample/sample.json, loaded."""

    points: np.ndarray                       # N x 5 (x, y, z, intensity, ring), LiDAR frame
    boxes: np.ndarray                        # M x 7, LiDAR frame
    box_classes: np.ndarray                  # M, index into DETECTION_CLASSES
    views: dict[str, CameraView]             # T_cam_lidar = sample's lidar2cam (static rig + ego motion)
    T_ego_lidar: np.ndarray
    T_ego_cam: dict[str, np.ndarray]
    stamp_us: int
    # Per camera: LiDAR frame at the LiDAR stamp -> LiDAR frame at that camera's stamp (see load_sample_json).
    lidar_motion: dict[str, np.ndarray] = field(default_factory=dict)

    def static_extrinsics(self) -> dict[str, np.ndarray]:
        """T_cam_lidar of the static rig, cam2ego^-1 @ lidar2ego: what a calibration file holds, the unknown
        SemAlign calibrates, and the truth of the evaluation. ``static @ lidar_motion[c] == lidar2cam``."""
        return {name: geo.invert_transform(self.T_ego_cam[name]) @ self.T_ego_lidar for name in self.views}


def load_sample_json(path: str | Path, with_images: bool = False) -> SampleRecord:
    """Read sample.json (+ the .pcd.bin next to it). Boxes labeled 'ignore' are dropped.

    sample.json's per-camera ``lidar2cam`` is mmdet3d's, cam2ego^-1 @ (ego motion between the LiDAR stamp and
    that camera's stamp) @ lidar2ego, not the static chain cam2ego^-1 @ lidar2ego: the cameras fire 0-43 ms
    before the LiDAR stamp while the car drives ~9 m/s (CAM_FRONT: 0.33 m). The ego motion is localization
    (ego poses), not calibration, so it is split off as ``lidar_motion[camera]`` = lidar2ego^-1 @ cam2ego @
    lidar2cam (= the LiDAR-frame form of ego_pose(t_cam)^-1 @ ego_pose(t_lidar)), exactly the term the
    nuScenes-dataset frames carry (``_lidar_motion``). The calibrated unknowns are then the static extrinsics
    (:meth:`SampleRecord.static_extrinsics`, what calib/nuscenes.yaml holds) and projection is
    static @ lidar_motion @ p = lidar2cam @ p. ``views[c].T_cam_lidar`` stays lidar2cam (the projection of
    LiDAR-stamp geometry such as the boxes into that camera's image)."""
    path = Path(path)
    if path.is_dir():
        path = path / "sample.json"
    if not path.is_file():
        raise UserError(f"sample json not found: {path}")
    try:
        meta = json.loads(path.read_text())
        points = np.fromfile(path.parent / meta["lidar"]["file"], dtype=np.float32).reshape(-1, 5)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot read nuScenes sample {path}: {err}") from err
    boxes, classes = [], []
    for inst in meta["instances"]:
        if inst["label"] in DETECTION_CLASSES:
            boxes.append(inst["box"][:7])
            classes.append(DETECTION_CLASSES.index(inst["label"]))
    views, ego_cam = {}, {}
    for name in CAMERA_NAMES:
        cam = meta["cameras"][name]
        image = None
        if with_images:
            bgr = cv2.imread(str(path.parent / cam["file"]))
            image = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        size = (1600, 900) if image is None else (image.shape[1], image.shape[0])
        views[name] = CameraView(name, size, np.array(cam["cam2img"], np.float64),
                                 np.array(cam["lidar2cam"], np.float64), image)
        ego_cam[name] = np.array(cam["cam2ego"], np.float64)
    T_ego_lidar = np.array(meta["lidar"]["lidar2ego"], np.float64)
    motion = {name: geo.invert_transform(T_ego_lidar) @ ego_cam[name] @ views[name].T_cam_lidar for name in views}
    return SampleRecord(points=points, boxes=np.array(boxes, np.float64).reshape(-1, 7),
                        box_classes=np.array(classes, np.int64), views=views, T_ego_lidar=T_ego_lidar,
                        T_ego_cam=ego_cam, stamp_us=int(round(meta["timestamp_s"] * 1e6)), lidar_motion=motion)


def sample_semantic_frame(record: SampleRecord, provider: BoxLabelProvider | None = None) -> SemanticFrame:
    """The keyframe as SemAlign input, box-derived labels with one class per box (both sides are rendered
    from the same boxes; by default ``BoxLabelProvider(instance_labels=True)``). Each camera carries its ``lidar_motion`` (ego motion between the LiDAR
    and camera stamps), so the extrinsics to give / calibrate are the static ones
    (``record.static_extrinsics()``), not sample.json's per-camera lidar2cam."""
    provider = provider or BoxLabelProvider(instance_labels=True)
    frame = provider.frame(record.points, record.boxes, record.box_classes, list(record.views.values()),
                           record.stamp_us)
    for name, cam in frame.cameras.items():
        if name in record.lidar_motion:
            cam.lidar_motion = np.asarray(record.lidar_motion[name], np.float64)
    return frame


# ----------------------------------------------------------------------------- nuScenes-format datasets


@dataclass
class DatasetFrame:
    """A keyframe of a nuScenes-format dataset with the truth needed for evaluation."""

    frame: SemanticFrame
    T_cam_lidar: dict[str, np.ndarray]     # static extrinsics from calibrated_sensor (the truth)
    T_ego_lidar: np.ndarray
    sample_token: str


def _lidar_motion(nusc, lidar_sd: str, cam_sd: str, T_ego_lidar: np.ndarray) -> np.ndarray:
    """LiDAR frame at the LiDAR stamp -> LiDAR frame at the camera stamp (ego motion from ego poses)."""
    from bevfusion_ros.data.nuscenes_io import ego_pose
    T_global_ego_l = ego_pose(nusc, lidar_sd)
    T_global_ego_c = ego_pose(nusc, cam_sd)
    motion_ego = geo.invert_transform(T_global_ego_c) @ T_global_ego_l
    return geo.invert_transform(T_ego_lidar) @ motion_ego @ T_ego_lidar


class SynthGroundTruthProvider:
    """Ground-truth semantics of the synthetic nuScenes dataset (or real nuScenes-lidarseg + masks): lidarseg
    point labels and per-camera semantic masks, both in nuScenes-lidarseg indices. Index 0 (noise / sky) and
    31 (ego vehicle) are unlabeled."""

    UNLABELED = (0, 31)

    def __init__(self, dataroot: str | Path, version: str | None = None, max_object_speed: float = 0.3):
        """``max_object_speed`` (m/s): LiDAR points on annotated objects moving faster are left unlabeled —
        the cameras see them up to 43 ms earlier, somewhere else (nuScenes has no motion-compensated
        object points). Needs the annotations' velocities; inf keeps everything."""
        self.max_object_speed = max_object_speed
        from bevfusion_ros.data.nuscenes_io import infer_version, open_nuscenes
        self.dataroot = Path(dataroot)
        self.version = version or infer_version(self.dataroot)
        self.nusc = open_nuscenes(self.dataroot, self.version)

    def _map(self, labels: np.ndarray) -> np.ndarray:
        out = labels.astype(np.int64)
        out[np.isin(out, self.UNLABELED)] = IGNORE
        return out

    def sample_tokens(self, scene: str | None = None) -> list[str]:
        if scene is None:
            return [s["token"] for s in self.nusc.sample]
        from bevfusion_ros.data.nuscenes_io import find_scene
        rec = find_scene(self.nusc, scene)
        tokens, token = [], rec["first_sample_token"]
        while token:
            tokens.append(token)
            token = self.nusc.get("sample", token)["next"]
        return tokens

    def _moving_object_points(self, sample, lidar_sd, points, T_ego_lidar) -> np.ndarray:
        from bevfusion_ros.data.nuscenes_io import ego_pose
        T_lidar_global = geo.invert_transform(ego_pose(self.nusc, lidar_sd) @ T_ego_lidar)
        boxes = []
        for token in sample["anns"]:
            ann = self.nusc.get("sample_annotation", token)
            velocity = self.nusc.box_velocity(token)
            speed = float(np.linalg.norm(velocity[:2])) if np.all(np.isfinite(velocity[:2])) else 0.0
            if speed > self.max_object_speed:
                box = geo.box_from_nuscenes(ann["translation"], ann["size"], ann["rotation"])
                box[3:6] += 0.2                      # a margin for points on the surface
                boxes.append(box)
        if not boxes:
            return np.zeros(len(points), bool)
        local = geo.transform_boxes(T_lidar_global, np.array(boxes))
        return geo.points_in_boxes(points[:, :3], local).any(1)

    def frame(self, sample_token: str, cameras: Sequence[str] = CAMERA_NAMES,
              image_labels: Callable[[CameraView], np.ndarray] | None = None) -> DatasetFrame:
        from bevfusion_ros.data.nuscenes_io import load_lidarseg, load_points, load_semantic_mask, sensor_calibration
        sample = self.nusc.get("sample", sample_token)
        lidar_sd = sample["data"]["LIDAR_TOP"]
        sd = self.nusc.get("sample_data", lidar_sd)
        points = load_points(self.dataroot / sd["filename"])
        labels = self._map(load_lidarseg(self.dataroot, self.version, lidar_sd))
        if len(labels) != len(points):
            raise UserError(f"lidarseg of {lidar_sd} has {len(labels)} labels for {len(points)} points")
        T_ego_lidar, _ = sensor_calibration(self.nusc, lidar_sd)
        if np.isfinite(self.max_object_speed):
            labels[self._moving_object_points(sample, lidar_sd, points, T_ego_lidar)] = IGNORE
        cams, truth = {}, {}
        for name in cameras:
            cam_sd = sample["data"].get(name)
            if cam_sd is None:
                continue
            T_ego_cam, K = sensor_calibration(self.nusc, cam_sd)
            T = geo.invert_transform(T_ego_cam) @ T_ego_lidar
            truth[name] = T
            csd = self.nusc.get("sample_data", cam_sd)
            if image_labels is None:
                mask = self._map(load_semantic_mask(self.dataroot, self.version, cam_sd))
            else:
                mask = image_labels(CameraView(name, (csd["width"], csd["height"]), K, T,
                                               _read_rgb(self.dataroot / csd["filename"])))
            cams[name] = CameraSemantics(name, mask, K, _lidar_motion(self.nusc, lidar_sd, cam_sd, T_ego_lidar))
        frame = SemanticFrame(points[:, :3], labels, cams, stamp_us=int(sd["timestamp"]))
        return DatasetFrame(frame, truth, T_ego_lidar, sample_token)


class LidarsegProvider(SynthGroundTruthProvider):
    """nuScenes-lidarseg point labels (real or synthetic) with image labels from a user function of the
    camera view (e.g. :class:`OnnxSegmentationProvider` mapped to lidarseg indices)."""

    def __init__(self, dataroot: str | Path, image_labels: Callable[[CameraView], np.ndarray],
                 version: str | None = None):
        super().__init__(dataroot, version)
        self.image_labels = image_labels

    def frame(self, sample_token: str, cameras: Sequence[str] = CAMERA_NAMES,
              image_labels: Callable[[CameraView], np.ndarray] | None = None) -> DatasetFrame:
        return super().frame(sample_token, cameras, image_labels or self.image_labels)


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path))
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- user ONNX segmentation


class OnnxSegmentationProvider:
    """Per-pixel classes from a user-supplied ONNX semantic segmentation model (onnxruntime, CPU).

    The model takes one float32 NCHW RGB image (``(x / 255 - mean) / std`` at ``input_size`` = (w, h), or
    the model's static input size) and returns logits [1, C, h', w']. The argmax class is resized (nearest)
    to the image and mapped through ``class_map`` (model class -> calibration class; unmapped -> IGNORE,
    identity when None) so it shares the LiDAR labels' index set."""

    def __init__(self, model_path: str | Path, class_map: Mapping[int, int] | None = None,
                 input_size: tuple[int, int] | None = None, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        import onnxruntime as ort
        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"segmentation model not found: {path}")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise UserError(f"cannot load segmentation model {path}: {err}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if input_size is None:
            if not (isinstance(shape[2], int) and isinstance(shape[3], int)):
                raise UserError(f"model {path} has a dynamic input size; pass input_size=(w, h)")
            input_size = (shape[3], shape[2])
        self.input_size = tuple(input_size)
        self.class_map = dict(class_map) if class_map is not None else None
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __call__(self, view: CameraView) -> np.ndarray:
        return self.labels(view.image)

    def labels(self, image: np.ndarray | None) -> np.ndarray:
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("segmentation needs an H x W x 3 RGB image")
        height, width = image.shape[:2]
        resized = cv2.resize(image, self.input_size, interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        tensor = ((resized - self.mean) / self.std).transpose(2, 0, 1)[None].astype(np.float32)
        logits = self.session.run(None, {self.input_name: tensor})[0]
        if logits.ndim != 4 or logits.shape[0] != 1:
            raise ValueError(f"segmentation model output must be [1, C, h, w], got {logits.shape}")
        classes = logits[0].argmax(0).astype(np.int32)
        classes = cv2.resize(classes, (width, height), interpolation=cv2.INTER_NEAREST)
        if self.class_map is None:
            return classes.astype(np.int64)
        lut = np.full(logits.shape[1], IGNORE, np.int64)
        for src, dst in self.class_map.items():
            if 0 <= src < len(lut):
                lut[src] = dst
        return lut[classes]
