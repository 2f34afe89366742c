"""Checkpoints: ``{"format": ..., "state_dict", "config" (dict), "metadata"}`` of plain tensors and
builtins, so they load with ``torch.load(..., weights_only=True)`` (no arbitrary pickles).

Loading checks, each a :class:`UserError` with a clear message: the file exists and is a checkpoint of
this format, its config matches the given config's architecture (``config.architecture_dict``), and every
parameter shape matches.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from bevfusion_ros.errors import UserError
from bevfusion_ros.model.config import ModelConfig, architecture_dict

FORMAT = "bevfusion_ros/checkpoint-v1"


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: ModelConfig, metadata: dict | None = None,
                    extra: dict | None = None, half: bool = False) -> None:
    """Write atomically (tmp file + rename) so an interrupted save never leaves a corrupt checkpoint."""
    module = model.module if hasattr(model, "module") else model
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in module.state_dict().items()}
    # metadata must be plain builtins (weights_only loading refuses e.g. torch's TorchVersion): JSON round trip
    plain_meta = json.loads(json.dumps(dict(metadata or {}), default=str))
    payload = {"format": FORMAT, "state_dict": state, "config": config.to_dict(), "metadata": plain_meta}
    if extra:
        payload.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types on bad files

        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a torch checkpoint loadable with "
                        f"weights_only=True ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise UserError(f"checkpoint {path} is not a bevfusion_ros checkpoint (expected format {FORMAT!r})")
    return payload


def load_into(model: torch.nn.Module, payload: dict, config: ModelConfig, source: str = "checkpoint",
              allow_missing: bool = False) -> list[str]:
    """Check the checkpoint's config against ``config`` and load the weights (strict).

    ``allow_missing`` (fine-tuning a model that adds a module to a trained one): the configs may differ and
    tensors the checkpoint lacks keep the model's values, but every tensor the checkpoint has must exist
    in the model with the same shape. Returns the names of the tensors not loaded."""
    saved = payload.get("config")
    if isinstance(saved, dict) and not allow_missing:
        want, have = architecture_dict(config), architecture_dict(_with_defaults(saved))
        diffs = _diff(want, have)
        if diffs:
            raise UserError(f"{source} was trained with a different model config ({config.name!r} differs in "
                            f"{', '.join(diffs[:6])}{' ...' if len(diffs) > 6 else ''})")
    state = payload["state_dict"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    kept = missing if allow_missing else []
    missing = [] if allow_missing else missing
    unexpected = sorted(set(state) - set(own))
    shape_bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape_bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s) e.g. {unexpected[0]}")
        if shape_bad:
            k = shape_bad[0]
            parts.append(f"shape mismatch at {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise UserError(f"{source} does not match config {config.name!r}: {'; '.join(parts)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=not allow_missing)
    return kept


def _with_defaults(saved: dict) -> dict:
    """A saved config with the defaults of keys added since it was written (a checkpoint from before
    ``map.lidar_raster`` existed has no such key, and the default is what it was trained with). A config
    this version cannot read at all is compared as saved, so the mismatch is still named."""
    try:
        return ModelConfig.from_dict(saved, "checkpoint config").to_dict()
    except (UserError, ValueError, TypeError):   # unreadable here: compare the raw dict
        return saved


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [prefix.rstrip(".")]
