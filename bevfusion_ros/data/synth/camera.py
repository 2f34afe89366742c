"""Camera renderer: the ground by per-pixel ground-plane intersection (a lookup into the scene's ground
raster, a coarser mip level in the far field), boxes by a z-buffered rasterization of their visible faces
(exact per-pixel depth of each face plane, faces clipped at the near plane), flat-shaded by a sun, with
distance haze, a sky gradient, a light blur and sensor noise. Beside the RGB image it produces the
per-pixel semantic class (lidarseg indices, 0 for sky) and the per-pixel owner (agent index, -1 static,
-2 ground/sky) from which annotation visibility is measured.

The ego is assumed level (no pitch/roll), so each pixel's ground intersection in the ego frame is fixed
and precomputed per camera.

Pixel convention: pixel (row i, column j) is the sample at image coordinates (u, v) = (j, i), pixel *centres*
at integers, as in OpenCV, nuScenes and ``geometry.project_to_image`` (u = fx x / z + cx). Every layer is
point-sampled there: the ground ray goes through (j, i), a box face covers a pixel iff (j, i) lies inside
its projected polygon, and the face's depth is evaluated at (j, i). (Until 2026-12-03 the ground used the
ray through (j + 0.5, i + 0.5) and faces were filled by ``cv2.fillPoly``, which rounds the vertices and
fills inclusively: ground labels sat half a pixel up-left of the projection and objects were ~0.5 px too
large on every side, which biased a calibration against these masks by ~1 cm in height.)
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bevfusion_ros.data.synth import semantics as sem
from bevfusion_ros.data.synth.ground import COARSE_FACTOR, GroundRaster
from bevfusion_ros.data.synth.rig import Sensor

NEAR = 0.1
GROUND_FAR = 250.0
FAR_FIELD = 22.0          # metres: beyond this the coarse ground mip level is used
HAZE = np.array([200.0, 205.0, 212.0], np.float32)
OUTSIDE_GROUND = (140, 136, 128)      # ground beyond the scene's raster (> 130 m from the route)
SKY_TOP = np.array([110.0, 150.0, 205.0], np.float32)
SKY_HORIZON = np.array([200.0, 212.0, 225.0], np.float32)
# Faces of a box in geometry.box_corners order: bottom 0-3, top 4-7; outward normals in the box frame.
FACES = np.array([[0, 1, 2, 3], [4, 7, 6, 5], [0, 4, 5, 1], [1, 5, 6, 2], [2, 6, 7, 3], [3, 7, 4, 0]])
FACE_NORMALS = np.array([[0, 0, -1], [0, 0, 1], [1, 0, 0], [0, -1, 0], [-1, 0, 0], [0, 1, 0]], np.float64)


@dataclass
class CameraFrame:
    image: np.ndarray       # H, W, 3 uint8 RGB
    semantic: np.ndarray    # H, W uint8 lidarseg class
    owner: np.ndarray       # H, W int32


class CameraRenderer:
    def __init__(self, camera: Sensor, sun: np.ndarray):
        self.camera = camera
        self.K = camera.intrinsic
        self.width, self.height = camera.width, camera.height
        T = camera.T_ego_sensor
        self.T_ego_cam = T
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        rays_cam = np.stack([(u - self.K[0, 2]) / self.K[0, 0], (v - self.K[1, 2]) / self.K[1, 1],
                             np.ones_like(u)], -1)
        rays_ego = rays_cam @ T[:3, :3].T
        dz = rays_ego[..., 2]
        cam_z = T[2, 3]
        t = np.where(dz < -1e-9, -cam_z / np.where(dz < -1e-9, dz, -1.0), np.inf)   # = depth (ray z_cam = 1)
        ground = np.isfinite(t) & (t < GROUND_FAR)
        self.ground_mask = ground.astype(np.uint8)
        self.ground_bool = ground
        self.ground_xy_ego = (T[:2, 3] + rays_ego[..., :2] * np.where(ground, t, 0.0)[..., None]).astype(np.float32)
        self.ground_invz = np.where(ground, 1.0 / np.where(ground, t, 1.0), 0.0).astype(np.float32)
        self.far_mask = (ground & (t > FAR_FIELD)).astype(np.uint8)
        haze = (1.0 - np.exp(-np.where(ground, t, 1e9) / 350.0)).astype(np.float32)
        self.haze_weight = haze
        self.clear_weight = (1.0 - haze).astype(np.float32)
        self.haze_image = np.empty((self.height, self.width, 3), np.uint8)
        self.haze_image[:] = HAZE.astype(np.uint8)
        elev = np.arcsin(np.clip(rays_ego[..., 2] / np.linalg.norm(rays_ego, axis=-1), -1, 1))
        mix = np.clip(elev / 0.5, 0, 1)[..., None].astype(np.float32)
        self.sky = np.clip(SKY_HORIZON * (1 - mix) + SKY_TOP * mix, 0, 255).astype(np.uint8)
        self.sun = sun / np.linalg.norm(sun)
        self.pixel_u = np.arange(self.width, dtype=np.float32)
        self.pixel_v = np.arange(self.height, dtype=np.float32)
        noise_rng = np.random.default_rng(7)
        self.noise = []
        for _ in range(4):
            noise = np.round(noise_rng.normal(0.0, 2.0, (self.height, self.width, 1))).repeat(3, 2)
            self.noise.append((np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)))

    def render(self, T_world_ego: np.ndarray, ground: GroundRaster, boxes: np.ndarray, colors: np.ndarray,
               classes: np.ndarray, owners: np.ndarray, rng: np.random.Generator, labels: bool = True) -> CameraFrame:
        """One image; with `labels` False (non-keyframes) the semantic and owner images are left empty."""
        h, w = self.height, self.width
        image = self.sky.copy()
        semantic = np.zeros((h, w), np.uint8)
        owner = np.full((h, w), -2, np.int32) if labels else np.zeros((1, 1), np.int32)
        zbuf = self.ground_invz.copy()

        # Ground: ego-frame ground points -> raster cells by one affine map, then remap.
        c, s = T_world_ego[0, 0], T_world_ego[1, 0]
        res = ground.resolution
        affine = np.array([[c / res, -s / res, (T_world_ego[0, 3] - ground.origin[0]) / res - 0.5],
                           [s / res, c / res, (T_world_ego[1, 3] - ground.origin[1]) / res - 0.5]], np.float32)
        cells = cv2.transform(self.ground_xy_ego, affine)
        fine = cv2.remap(ground.color, cells, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=OUTSIDE_GROUND)
        coarse_affine = affine / COARSE_FACTOR
        coarse_affine[:, 2] += (0.5 / COARSE_FACTOR - 0.5)
        coarse = cv2.remap(ground.coarse_color, cv2.transform(self.ground_xy_ego, coarse_affine), None,
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=OUTSIDE_GROUND)
        cv2.copyTo(coarse, self.far_mask, fine)
        hazy = cv2.blendLinear(fine, self.haze_image, self.clear_weight, self.haze_weight)
        cv2.copyTo(hazy, self.ground_mask, image)
        if labels:
            cls = cv2.remap(ground.cls, cells, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=sem.FLAT_OTHER)
            cv2.copyTo(cls, self.ground_mask, semantic)

        if len(boxes):
            self._draw_boxes(T_world_ego, boxes, colors, classes, owners, image, semantic if labels else None,
                             owner if labels else None, zbuf)

        image = cv2.GaussianBlur(image, (0, 0), 0.6)
        plus, minus = self.noise[int(rng.integers(len(self.noise)))]
        image = cv2.subtract(cv2.add(image, plus), minus)     # sensor noise, saturating
        return CameraFrame(image=image, semantic=semantic, owner=owner)

    def _draw_boxes(self, T_world_ego, boxes, colors, classes, owners, image, semantic, owner, zbuf):
        T_world_cam = T_world_ego @ self.T_ego_cam
        T_cam_world = np.linalg.inv(T_world_cam)
        cam_pos_world = T_world_cam[:3, 3]
        rel = boxes[:, :2] - cam_pos_world[:2]
        keep = np.einsum("ij,ij->i", rel, rel) < 160.0 ** 2
        idx = np.nonzero(keep)[0]
        if not len(idx):
            return
        b = boxes[idx]
        cy, sy = np.cos(b[:, 6]), np.sin(b[:, 6])
        sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
        syy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
        sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
        lx, ly = sx * b[:, 3:4], syy * b[:, 4:5]
        corners = np.stack([b[:, 0:1] + cy[:, None] * lx - sy[:, None] * ly,
                            b[:, 1:2] + sy[:, None] * lx + cy[:, None] * ly,
                            b[:, 2:3] + sz * b[:, 5:6]], -1)
        corners_cam = corners @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]          # B, 8, 3
        # Frustum culling: a box is out if all its corners are outside one of the five planes.
        K = self.K
        fx, fy, cx, cyy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        w, h = self.width, self.height
        X, Y, Z = corners_cam[..., 0], corners_cam[..., 1], corners_cam[..., 2]
        outside = ((Z < NEAR).all(1) | (fx * X + cx * Z < 0).all(1) | ((w - cx) * Z - fx * X < 0).all(1)
                   | (fy * Y + cyy * Z < 0).all(1) | ((h - cyy) * Z - fy * Y < 0).all(1))
        inside = ~outside
        if not inside.any():
            return
        idx, b, corners_cam, cy, sy = idx[inside], b[inside], corners_cam[inside], cy[inside], sy[inside]
        rot_n = np.zeros((len(b), 6, 3))
        rot_n[..., 0] = cy[:, None] * FACE_NORMALS[:, 0] - sy[:, None] * FACE_NORMALS[:, 1]
        rot_n[..., 1] = sy[:, None] * FACE_NORMALS[:, 0] + cy[:, None] * FACE_NORMALS[:, 1]
        rot_n[..., 2] = FACE_NORMALS[:, 2]
        normals_cam = rot_n @ T_cam_world[:3, :3].T
        face_pts = corners_cam[:, FACES]                                                # B, 6, 4, 3
        plane_d = np.einsum("bfk,bfk->bf", normals_cam, face_pts[:, :, 0])
        visible = (plane_d < -1e-6) & (face_pts[..., 2].max(2) > NEAR)
        shade = 0.55 + 0.45 * np.clip(rot_n @ self.sun, 0, 1) + 0.1 * (rot_n[..., 2] > 0.5)
        depth = np.maximum(np.linalg.norm(b[:, :3] - cam_pos_world, axis=1), 0.1)
        haze = (1.0 - np.exp(-depth / 350.0))[:, None, None]
        face_rgb = colors[idx][:, None, :].astype(np.float64) * shade[..., None] * (1 - haze) + HAZE * haze
        face_rgb = np.clip(face_rgb, 0, 255).astype(np.uint8)                          # B, 6, 3
        # Per-face 1/z plane coefficients: n.X = d with X = z * ((u-cx)/fx, (v-cy)/fy, 1).
        n = normals_cam
        coef_u = n[..., 0] / (fx * plane_d)
        coef_v = n[..., 1] / (fy * plane_d)
        coef_c = (n[..., 2] - n[..., 0] * cx / fx - n[..., 1] * cyy / fy) / plane_d
        face_cls = classes[idx]
        face_owner = owners[idx]
        # Near to far, so that faces hidden behind what is already drawn are skipped cheaply.
        vis_b, vis_f = np.nonzero(visible)
        order = np.argsort(np.einsum("ij,ij->i", b[vis_b, :2] - cam_pos_world[:2], b[vis_b, :2] - cam_pos_world[:2]),
                           kind="stable")
        for bi, fi in zip(vis_b[order], vis_f[order]):
            pts = face_pts[bi, fi]
            if pts[:, 2].min() < NEAR:
                pts = _clip_near(pts)
                if len(pts) < 3:
                    continue
            uv = pts[:, :2] / pts[:, 2:3] * (fx, fy) + (cx, cyy)
            lo = np.ceil(uv.min(0)).astype(int)               # pixels whose centre can be inside
            hi = np.floor(uv.max(0)).astype(int) + 1
            x0, y0 = max(lo[0], 0), max(lo[1], 0)
            x1, y1 = min(hi[0], w), min(hi[1], h)
            if x1 <= x0 or y1 <= y0:
                continue
            zslice = zbuf[y0:y1, x0:x1]
            if (x1 - x0) * (y1 - y0) > 4096 and zslice.min() > 1.0 / pts[:, 2].min():
                continue                                            # entirely behind nearer surfaces
            uu = self.pixel_u[x0:x1]
            vv = self.pixel_v[y0:y1]
            invz = np.float32(coef_u[bi, fi]) * uu[None, :] + (np.float32(coef_v[bi, fi]) * vv[:, None]
                                                               + np.float32(coef_c[bi, fi]))
            win = invz > zslice
            win &= _convex_cover(uv - (x0, y0), x1 - x0, y1 - y0)
            np.copyto(zslice, invz, where=win)
            np.copyto(image[y0:y1, x0:x1], face_rgb[bi, fi], where=win[..., None])
            if semantic is not None:
                np.copyto(semantic[y0:y1, x0:x1], face_cls[bi], where=win)
                np.copyto(owner[y0:y1, x0:x1], face_owner[bi], where=win)


def _convex_cover(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boolean [height, width]: pixels whose centre (j, i) lies inside (or on the border of) the convex polygon
    uv [N, 2] (window coordinates). Exact point sampling, unlike cv2.fillPoly, which rounds the vertices to
    the pixel grid and fills inclusively (a ~0.5 px dilation on every side)."""
    area2 = float(np.sum(uv[:, 0] * np.roll(uv[:, 1], -1) - np.roll(uv[:, 0], -1) * uv[:, 1]))
    cover = np.ones((height, width), bool)
    if abs(area2) < 1e-12:
        return cover & False
    sign = 1.0 if area2 > 0 else -1.0
    xs = np.arange(width, dtype=np.float64)[None, :]
    ys = np.arange(height, dtype=np.float64)[:, None]
    for a, b in zip(uv, np.roll(uv, -1, axis=0)):
        ex, ey = b - a
        # cross((b - a), (p - a)) has the polygon's orientation sign for p inside
        cover &= sign * (ex * (ys - a[1]) - ey * (xs - a[0])) >= -1e-9
    return cover


def _clip_near(pts: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon [N, 3] (camera frame) to z >= NEAR."""
    out = []
    n = len(pts)
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        a_in, b_in = a[2] >= NEAR, b[2] >= NEAR
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)
