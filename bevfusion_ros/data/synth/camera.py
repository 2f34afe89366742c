"""Camera renderer: the ground by per-pixel ground-plane intersection (a lookup into the scene's ground
raster, a coarser mip level in the far field), boxes by a z-buffered rasterization of their visible faces
(exact per-pixel depth of each face plane, faces clipped at the near plane), flat-shaded by a sun, with
distance haze, a sky gradient, a light blur and sensor noise. Beside the RGB image it produces the
per-pixel semantic class (lidarseg indices, 0 for sky) and the per-pixel owner (agent index, -1 static,
-2 ground/sky) from which annotation visibility is measured.

The ego is assumed level (no pitch/roll), so each pixel's ground intersection in the ego frame is fixed
and precomputed per camera.
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
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64) + 0.5, np.arange(self.height, dtype=np.float64) + 0.5)
        rays_cam = np.stack([(u - self.K[0, 2]) / self.K[0, 0], (v - self.K[1, 2]) / self.K[1, 1], np.ones_like(u)], -1)
        rays_ego = rays_cam @ T[:3, :3].T
        dz = rays_ego[..., 2]
        cam_z = T[2, 3]
        t = np.where(dz < -1e-9, -cam_z / np.where(dz < -1e-9, dz, -1.0), np.inf)   # = depth (ray z_cam = 1)
        ground = np.isfinite(t) & (t < GROUND_FAR)
        self.ground_mask = ground
        self.ground_xy_ego = (T[:2, 3] + rays_ego[..., :2] * np.where(ground, t, 0.0)[..., None]).astype(np.float32)
        self.ground_depth = np.where(ground, t, np.inf).astype(np.float32)
        self.ground_invz = np.where(ground, 1.0 / np.where(ground, t, 1.0), 0.0).astype(np.float32)
        self.far = ground & (t > FAR_FIELD)
        self.haze = (1.0 - np.exp(-np.where(ground, t, 1e9) / 350.0)).astype(np.float32)[..., None]
        elev = np.arcsin(np.clip(rays_ego[..., 2] / np.linalg.norm(rays_ego, axis=-1), -1, 1))
        mix = np.clip(elev / 0.5, 0, 1)[..., None].astype(np.float32)
        self.sky = (SKY_HORIZON * (1 - mix) + SKY_TOP * mix).astype(np.float32)
        self.sun = sun / np.linalg.norm(sun)

    def render(self, T_world_ego: np.ndarray, ground: GroundRaster, boxes: np.ndarray, colors: np.ndarray,
               classes: np.ndarray, owners: np.ndarray, rng: np.random.Generator) -> CameraFrame:
        h, w = self.height, self.width
        image = self.sky.copy()
        semantic = np.zeros((h, w), np.uint8)
        owner = np.full((h, w), -2, np.int32)
        zbuf = self.ground_invz.copy()

        # Ground.
        c, s = T_world_ego[0, 0], T_world_ego[1, 0]
        gx = self.ground_xy_ego[..., 0]
        gy = self.ground_xy_ego[..., 1]
        wx = c * gx - s * gy + T_world_ego[0, 3]
        wy = s * gx + c * gy + T_world_ego[1, 3]
        map_x = ((wx - ground.origin[0]) / ground.resolution - 0.5).astype(np.float32)
        map_y = ((wy - ground.origin[1]) / ground.resolution - 0.5).astype(np.float32)
        fine = cv2.remap(ground.color, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        coarse = cv2.remap(ground.coarse_color, (map_x + 0.5) / COARSE_FACTOR - 0.5, (map_y + 0.5) / COARSE_FACTOR - 0.5,
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        ground_rgb = np.where(self.far[..., None], coarse, fine).astype(np.float32)
        ground_rgb = ground_rgb * (1 - self.haze) + HAZE * self.haze
        image = np.where(self.ground_mask[..., None], ground_rgb, image)
        cls = cv2.remap(ground.cls, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=sem.FLAT_OTHER)
        semantic[self.ground_mask] = cls[self.ground_mask]

        # Boxes.
        if len(boxes):
            self._draw_boxes(T_world_ego, boxes, colors, classes, owners, image, semantic, owner, zbuf)

        image = cv2.GaussianBlur(image, (0, 0), 0.6)
        image += rng.normal(0.0, 2.0, (h // 4, w // 4, 1)).astype(np.float32).repeat(4, 0).repeat(4, 1)
        return CameraFrame(image=np.clip(image, 0, 255).astype(np.uint8), semantic=semantic, owner=owner)

    def _draw_boxes(self, T_world_ego, boxes, colors, classes, owners, image, semantic, owner, zbuf):
        T_cam_world = np.linalg.inv(T_world_ego @ self.T_ego_cam)
        cam_pos_world = (T_world_ego @ self.T_ego_cam)[:3, 3]
        # Cull boxes far away or behind.
        rel = boxes[:, :3] - cam_pos_world
        dist = np.linalg.norm(rel[:, :2], axis=1)
        radius = np.linalg.norm(boxes[:, 3:6], axis=1) / 2
        centre_cam = rel @ T_cam_world[:3, :3].T
        keep = (dist < 160.0) & (centre_cam[:, 2] > -radius)
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
        # World normals of the 6 faces, per box.
        rot_n = np.zeros((len(b), 6, 3))
        rot_n[..., 0] = cy[:, None] * FACE_NORMALS[:, 0] - sy[:, None] * FACE_NORMALS[:, 1]
        rot_n[..., 1] = sy[:, None] * FACE_NORMALS[:, 0] + cy[:, None] * FACE_NORMALS[:, 1]
        rot_n[..., 2] = FACE_NORMALS[:, 2]
        normals_cam = rot_n @ T_cam_world[:3, :3].T
        face_pts = corners_cam[:, FACES]                                                # B, 6, 4, 3
        face_centre = face_pts.mean(2)
        visible = np.einsum("bfk,bfk->bf", normals_cam, face_centre) < -1e-6
        visible &= face_pts[..., 2].max(2) > NEAR
        shade = 0.55 + 0.45 * np.clip(rot_n @ self.sun, 0, 1) + 0.1 * (rot_n[..., 2] > 0.5)
        K = self.K
        fx, fy, cx, cyy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        w, h = self.width, self.height
        for bi, fi in zip(*np.nonzero(visible)):
            pts = face_pts[bi, fi]
            if pts[:, 2].min() < NEAR:
                pts = _clip_near(pts)
                if len(pts) < 3:
                    continue
            uv = np.stack([fx * pts[:, 0] / pts[:, 2] + cx, fy * pts[:, 1] / pts[:, 2] + cyy], 1)
            x0 = max(int(np.floor(uv[:, 0].min())), 0)
            x1 = min(int(np.ceil(uv[:, 0].max())), w)
            y0 = max(int(np.floor(uv[:, 1].min())), 0)
            y1 = min(int(np.ceil(uv[:, 1].max())), h)
            if x1 <= x0 or y1 <= y0:
                continue
            n = normals_cam[bi, fi]
            d = float(n @ face_pts[bi, fi, 0])
            if abs(d) < 1e-9:
                continue
            # 1/z over the patch: plane n.X = d with X = z * ((u-cx)/fx, (v-cy)/fy, 1).
            uu = np.arange(x0, x1, dtype=np.float32) + 0.5
            vv = np.arange(y0, y1, dtype=np.float32) + 0.5
            invz = (np.float32(n[0] / (fx * d)) * uu[None, :]
                    + (np.float32(n[1] / (fy * d)) * vv[:, None]
                       + np.float32((n[2] - n[0] * cx / fx - n[1] * cyy / fy) / d)))
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(mask, [np.round((uv - [x0, y0]) * 16).astype(np.int32)], 1, shift=4)
            zslice = zbuf[y0:y1, x0:x1]
            win = (mask.view(bool)) & (invz > zslice)
            if not win.any():
                continue
            zslice[win] = invz[win]
            box = idx[bi]
            depth = 1.0 / max(float(invz[win].min()), 1e-6)
            haze = 1.0 - np.exp(-depth / 350.0)
            rgb = colors[box].astype(np.float32) * shade[bi, fi]
            rgb = rgb * (1 - haze) + HAZE * haze
            image[y0:y1, x0:x1][win] = rgb
            semantic[y0:y1, x0:x1][win] = classes[box]
            owner[y0:y1, x0:x1][win] = owners[box]


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
