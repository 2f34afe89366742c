"""Image-side loss fields: per class, a smooth, bounded function of the signed distance to the class mask.

For class c with mask M_c (at the field's resolution) the signed distance sd(x) is the Euclidean distance
to the mask from outside (positive) and minus the distance to the outside from inside (negative), both from
``cv2.distanceTransform`` (exact L2). The field is

    f(x) = 1 - exp(-g(sd(x)) / tau),   g(sd) = s * softplus(sd / s)

- ``g`` is a smooth ramp: ~0 deep inside the mask, ~sd outside, rounded over a band of ``s`` pixels at the
  border, so a point just inside an edge still feels a small push towards the middle (the minimum of the
  loss is centred in the feasible set rather than anywhere on a plateau).
- ``1 - exp(-g / tau)`` bounds the value in [0, 1): far-off points (outliers, occlusions, wrong labels)
  saturate instead of dominating; ``tau`` sets the capture range. Coarse levels use a large ``tau`` and
  ``s`` on a low-resolution mask (wide basin for the search), fine levels a small one (precision).

Distances are measured in pixels of the *full-resolution* image whatever the field's resolution, so the
parameters mean the same thing at every level. Each field also carries its chance level: the mean of f over
the image, the expected value for a point dropped at a random place. The loss gives that value to points that
leave the image or go behind the camera (they carry no evidence either way): a candidate cannot lower its
loss by pushing points out of view, and the value is constant, so it adds no gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FieldLevel:
    """One level of the multi-scale pyramid. Pixel quantities are in full-resolution pixels."""

    downsample: int          # field resolution = image size / downsample
    tau_px: float            # saturation distance (capture range)
    soft_px: float           # width of the rounded band at the mask border

    def to_dict(self) -> dict:
        return {"downsample": self.downsample, "tau_px": self.tau_px, "soft_px": self.soft_px}


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Boolean mask at 1/factor resolution by area fraction >= 0.5 (no half-pixel shift, unlike nearest)."""
    if factor == 1:
        return mask.astype(bool)
    return _threshold(area_fraction(mask.astype(np.float32), factor), mask.any())


def area_fraction(fraction: np.ndarray, factor: int) -> np.ndarray:
    """Area-averaged coverage [0, 1] of a coverage map at 1/factor resolution."""
    height, width = fraction.shape
    size = (max(1, int(round(width / factor))), max(1, int(round(height / factor))))
    return cv2.resize(fraction, size, interpolation=cv2.INTER_AREA)


def _threshold(frac: np.ndarray, nonempty: bool) -> np.ndarray:
    small = frac >= 0.5
    if not small.any() and nonempty:        # a thin structure (pole) below half a coarse pixel: keep its best cells
        small = frac >= 0.5 * frac.max()
    return small


def signed_distance(mask: np.ndarray, precise: bool = True) -> np.ndarray:
    """Signed distance (pixels of `mask`) to the mask border: > 0 outside, < 0 inside.

    An all-true mask gives -inf-like large negative values; an all-false mask is the caller's problem
    (there is no border to measure to) and raises."""
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("signed_distance of an empty mask")
    kind = cv2.DIST_MASK_PRECISE if precise else cv2.DIST_MASK_5    # 5x5 mask: ~2 % error, for coarse levels
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, kind)
    if mask.all():
        inside = np.full(mask.shape, float(max(mask.shape)), np.float32)
    else:
        inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, kind)
    # Both transforms measure to the nearest pixel *centre* of the other set; the border lies half a pixel
    # before it.
    return np.where(mask, -(inside - 0.5), outside - 0.5).astype(np.float32)


def class_field(mask: np.ndarray, level: FieldLevel) -> tuple[np.ndarray, float]:
    """(field [h, w] float32 in [0, 1), chance level) of one full-resolution class mask at `level`."""
    return field_from_small_mask(downsample_mask(mask, level.downsample), level)


def class_fields(mask: np.ndarray, levels: tuple[FieldLevel, ...] | list[FieldLevel]
                 ) -> list[tuple[np.ndarray, float]]:
    """:func:`class_field` for several levels, sharing the area-fraction pyramid (each level is resized
    from the nearest finer one already computed, which is exact for INTER_AREA at integer factors)."""
    cache: dict[int, np.ndarray] = {1: mask.astype(np.float32)}
    first = min(level.downsample for level in levels)
    if first > 1:   # the first reduction from the full-resolution mask in uint8 (4x less memory traffic)
        cache[first] = area_fraction(mask.astype(np.uint8) * np.uint8(255), first).astype(np.float32) / 255.0
    nonempty = bool(mask.any())
    out = []
    for level in levels:
        factor = level.downsample
        if factor not in cache:
            base = max((f for f in cache if factor % f == 0), default=1)
            cache[factor] = area_fraction(cache[base], factor // base)
        small = mask.astype(bool) if factor == 1 else _threshold(cache[factor], nonempty)
        out.append(field_from_small_mask(small, level))
    return out


def field_from_small_mask(small: np.ndarray, level: FieldLevel) -> tuple[np.ndarray, float]:
    """The field of a mask already at the level's resolution. f is a function of the signed distance
    only, so it is read from a table at 1/16 px steps rather than evaluated per pixel (exp/log1p on every
    pixel of ~200 masks was a third of a rig calibration's CPU time)."""
    precise = level.downsample <= 2
    sd_px = signed_distance(small, precise) * np.float32(level.downsample)   # full-resolution pixels
    table, lo, step = _field_table(level.tau_px, level.soft_px)
    index = np.clip((sd_px - lo) / step + 0.5, 0, len(table) - 1).astype(np.int32)
    field = table[index]
    return field, float(field.mean())


_TABLES: dict[tuple[float, float], tuple[np.ndarray, float, float]] = {}


def _field_table(tau: float, soft: float) -> tuple[np.ndarray, float, float]:
    key = (float(tau), float(soft))
    if key not in _TABLES:
        step = 1.0 / 16.0
        lo, hi = -4096.0, 8.0 * tau + 16.0 * soft
        sd = np.arange(lo, hi + step, step)
        soft = max(soft, 1e-3)
        ramp = soft * np.logaddexp(0.0, sd / soft)
        _TABLES[key] = ((1.0 - np.exp(-ramp / tau)).astype(np.float32), lo, step)
    return _TABLES[key]


def class_masks(labels: np.ndarray, classes: list[int]) -> dict[int, np.ndarray]:
    """Boolean masks of the given classes in a class map (absent classes are omitted)."""
    out = {}
    for cls in classes:
        mask = labels == cls
        if mask.any():
            out[int(cls)] = mask
    return out
