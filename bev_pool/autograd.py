"""Public pooling functions: validation, device dispatch and autograd.

Output layout: ``bev [B, Z*C, X, Y]`` — axis 2 is x (forward), axis 3 is y (left); channel ``z * C + c`` holds
channel ``c`` of height bin ``z`` (BEVFusion's ``[B, C, Z, X, Y]`` with z unbound into channels, z-major).
The tensor is returned in ``torch.channels_last`` memory format (it is a permuted view of the contiguous
``[B, X, Y, Z*C]`` buffer the kernels write one cell at a time). Every torch op accepts it; call
``.contiguous()`` where a consumer (an ONNX/TensorRT binding) needs NCHW strides.
"""
from __future__ import annotations

import torch

from . import cpu
from .plan import BEVPoolPlan

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BACKENDS = ("auto", "torch", "cuda")


def _check_tensor(name: str, tensor: object, dims: int) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(tensor.shape)}")
    if tensor.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16/bfloat16/float32/float64, got {tensor.dtype}")
    return tensor


def _check_device(plan: BEVPoolPlan, **tensors: torch.Tensor) -> torch.device:
    devices = {name: tensor.device for name, tensor in tensors.items()}
    devices["plan"] = plan.device
    if len(set(devices.values())) != 1:
        listing = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"bev_pool inputs must be on one device: {listing} (use plan.to(device))")
    return plan.device


def _use_cuda_kernel(device: torch.device, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device.type != "cuda":
        if backend == "cuda":
            raise ValueError(f"backend='cuda' needs CUDA tensors, got {device}")
        return False
    if backend == "torch":
        return False
    from . import cuda
    cuda.require_cupy()
    return True


def _output(plan: BEVPoolPlan, channels: int, dtype: torch.dtype, device: torch.device,
            out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(bev [B, Z*C, X, Y] channels-last view, the same memory as [cells, C])."""
    batch = plan.geometry_shape[0]
    size_x, size_y, size_z = plan.grid_shape
    expected = (batch, size_z * channels, size_x, size_y)
    if out is None:
        buffer = torch.empty(batch, size_x, size_y, size_z * channels, dtype=dtype, device=device)
        return buffer.permute(0, 3, 1, 2), buffer.view(-1, channels)
    if tuple(out.shape) != expected or out.dtype != dtype or out.device != device:
        raise ValueError(f"out must be {expected} {dtype} on {device}, got {tuple(out.shape)} {out.dtype} on "
                         f"{out.device}")
    channels_last = out.permute(0, 2, 3, 1)
    if not channels_last.is_contiguous():
        raise ValueError("out must be in torch.channels_last memory format (e.g. a previous result, or "
                         "torch.empty(shape).to(memory_format=torch.channels_last))")
    return out, channels_last.view(-1, channels)


def _grad_rows(grad: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, Z*C, X, Y] gradient (any strides) -> contiguous [cells, C] in ``dtype``."""
    return grad.permute(0, 2, 3, 1).to(dtype).contiguous().view(-1, channels)


class _PoolFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, depth_probs, feats, use_cuda):  # noqa: D102
        bev, rows = _output(plan, feats.shape[2], feats.dtype, feats.device, None)
        _forward_fused(plan, depth_probs, feats, rows, use_cuda)
        ctx.plan = plan
        ctx.save_for_backward(depth_probs, feats)
        return bev

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        depth_probs, feats = ctx.saved_tensors
        dtype = cpu.compute_dtype(feats.dtype)
        grad_depth, grad_feats = cpu.fused_backward(
            ctx.plan, depth_probs, feats, _grad_rows(grad, feats.shape[2], dtype),
            need_depth=ctx.needs_input_grad[1], need_feats=ctx.needs_input_grad[2])
        if grad_depth is not None:
            grad_depth = grad_depth.to(depth_probs.dtype)
        if grad_feats is not None:
            grad_feats = grad_feats.to(feats.dtype)
        return None, grad_depth, grad_feats, None


class _PoolPoints(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, point_feats, use_cuda):  # noqa: D102
        bev, rows = _output(plan, point_feats.shape[1], point_feats.dtype, point_feats.device, None)
        _forward_points(plan, point_feats, rows, use_cuda)
        ctx.plan = plan
        ctx.num_points = point_feats.shape[0]
        return bev

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        channels = grad.shape[1] // ctx.plan.grid_shape[2]
        dtype = cpu.compute_dtype(grad.dtype)
        grad_points = cpu.points_backward(ctx.plan, _grad_rows(grad, channels, dtype), ctx.num_points)
        return None, grad_points.to(grad.dtype), None


def _forward_fused(plan, depth_probs, feats, rows, use_cuda):
    if use_cuda:
        from . import cuda
        cuda.fused_forward(plan, depth_probs, feats, rows)
    else:
        cpu.fused_forward(plan, depth_probs, feats, rows)


def _forward_points(plan, point_feats, rows, use_cuda):
    if use_cuda:
        from . import cuda
        cuda.points_forward(plan, point_feats, rows)
    else:
        cpu.points_forward(plan, point_feats, rows)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


def pool_fused(plan: BEVPoolPlan, depth_probs: torch.Tensor, feats: torch.Tensor, *,
               out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """``bev[b, z*C + c, x, y] = sum over frustum points p in cell (b, x, y, z) of depth_probs[p] * feats[pixel(p), c]``.

    ``depth_probs [B, N, D, H, W]``, ``feats [B, N, C, H, W]`` (same dtype and device as each other and the
    plan; fp16/bf16 are accumulated in fp32). Never forms the ``[B, N, D, H, W, C]`` product. Returns
    ``[B, Z*C, X, Y]`` (channels-last memory format, see the module docstring). ``out`` (inference only):
    a previous result to overwrite, which saves the allocation. ``backend``: "auto" (CUDA kernel for CUDA
    tensors, torch on CPU), "torch" (torch ops on any device) or "cuda".
    """
    if not isinstance(plan, BEVPoolPlan):
        raise TypeError(f"plan must be a BEVPoolPlan, got {type(plan).__name__}")
    _check_tensor("depth_probs", depth_probs, 5)
    _check_tensor("feats", feats, 5)
    plan.check_geometry_shape(tuple(depth_probs.shape), "depth_probs [B, N, D, H, W]")
    batch, cams, _, height, width = plan.geometry_shape
    if (feats.shape[0], feats.shape[1], feats.shape[3], feats.shape[4]) != (batch, cams, height, width):
        raise ValueError(f"feats must be [B, N, C, H, W] = [{batch}, {cams}, C, {height}, {width}] to match the "
                         f"plan, got {tuple(feats.shape)}")
    if depth_probs.dtype != feats.dtype:
        raise ValueError(f"depth_probs is {depth_probs.dtype} but feats is {feats.dtype}: pass one dtype")
    device = _check_device(plan, depth_probs=depth_probs, feats=feats)
    use_cuda = _use_cuda_kernel(device, backend)
    if _needs_grad(depth_probs, feats):
        if out is not None:
            raise ValueError("out= is for inference only (no input may require grad)")
        return _PoolFused.apply(plan, depth_probs, feats, use_cuda)
    bev, rows = _output(plan, feats.shape[2], feats.dtype, device, out)
    with torch.no_grad():
        _forward_fused(plan, depth_probs, feats, rows, use_cuda)
    return bev


def pool_points(plan: BEVPoolPlan, point_feats: torch.Tensor, *, out: torch.Tensor | None = None,
                backend: str = "auto") -> torch.Tensor:
    """Classic BEVFusion pooling: ``bev[b, z*C + c, x, y] = sum over points p in the cell of point_feats[p, c]``.

    ``point_feats [P, C]`` with ``P = B*N*D*H*W`` in frustum order (the row-major flattening of
    ``[B, N, D, H, W]``, e.g. ``(depth_probs[:, :, :, None] * feats[:, :, None]).permute(0, 1, 2, 4, 5, 3)
    .reshape(-1, C)``). Returns ``[B, Z*C, X, Y]`` (channels-last memory format).
    """
    if not isinstance(plan, BEVPoolPlan):
        raise TypeError(f"plan must be a BEVPoolPlan, got {type(plan).__name__}")
    _check_tensor("point_feats", point_feats, 2)
    batch, cams, depth, height, width = plan.geometry_shape
    expected = batch * cams * depth * height * width
    if point_feats.shape[0] != expected:
        raise ValueError(f"point_feats has {point_feats.shape[0]} rows but the plan's geometry "
                         f"{plan.geometry_shape} has P = {expected} frustum points: rebuild the plan")
    device = _check_device(plan, point_feats=point_feats)
    use_cuda = _use_cuda_kernel(device, backend)
    if _needs_grad(point_feats):
        if out is not None:
            raise ValueError("out= is for inference only (no input may require grad)")
        return _PoolPoints.apply(plan, point_feats, use_cuda)
    bev, rows = _output(plan, point_feats.shape[1], point_feats.dtype, device, out)
    with torch.no_grad():
        _forward_points(plan, point_feats, rows, use_cuda)
    return bev
