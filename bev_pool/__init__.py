"""bev_pool: camera-to-BEV pooling with a cached plan and fused depth weighting (CPU and CUDA).

Standalone (torch, optionally CuPy); imports neither rclpy nor bevfusion_ros. See README.md.

    grid = BEVGrid()                                       # +-54 m, 0.3 m, one z bin -> (360, 360, 1)
    xyz = frustum_points(K, T_lidar_cam, image_aug)        # [B, N, D, H, W, 3], once per calibration
    plan = BEVPoolPlan.from_geometry(xyz, grid)            # once per calibration
    bev = pool_fused(plan, depth_probs, feats)             # every frame -> [B, C*Z, X, Y]
"""
from .autograd import pool_fused, pool_points
from .frustum import depth_bins, frustum_points, nuscenes_image_aug
from .grid import BEVGrid
from .plan import BEVPoolPlan

__all__ = ["BEVGrid", "BEVPoolPlan", "depth_bins", "frustum_points", "nuscenes_image_aug", "pool_fused",
           "pool_points"]
