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
    height, width = mask.shape
    size = (max(1, int(round(width / factor))), max(1, int(round(height / factor))))
    frac = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    small = frac >= 0.5
    if not small.any() and mask.any():      # a thin structure (pole) below half a coarse pixel: keep its best cells
        small = frac >= 0.5 * frac.max()
    return small


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance (pixels of `mask`) to the mask border: > 0 outside, < 0 inside.

    An all-true mask gives -inf-like large negative values; an all-false mask is the caller's problem
    (there is no border to measure to) and raises."""
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("signed_distance of an empty mask")
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if mask.all():
        inside = np.full(mask.shape, float(max(mask.shape)), np.float32)
    else:
        inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # Both transforms measure to the nearest pixel *centre* of the other set; the border lies half a pixel
    # before it.
    return np.where(mask, -(inside - 0.5), outside - 0.5).astype(np.float32)


def class_field(mask: np.ndarray, level: FieldLevel) -> tuple[np.ndarray, float]:
    """(field [h, w] float32 in [0, 1), chance level) of one full-resolution class mask at `level`."""
    small = downsample_mask(mask, level.downsample)
    sd_px = signed_distance(small) * float(level.downsample)  # full-resolution pixels
    soft = max(level.soft_px, 1e-3)
    ramp = soft * np.logaddexp(0.0, sd_px / soft)
    field = (1.0 - np.exp(-ramp / level.tau_px)).astype(np.float32)
    return field, float(field.mean())


def class_masks(labels: np.ndarray, classes: list[int]) -> dict[int, np.ndarray]:
    """Boolean masks of the given classes in a class map (absent classes are omitted)."""
    out = {}
    for cls in classes:
        mask = labels == cls
        if mask.any():
            out[int(cls)] = mask
    return out
