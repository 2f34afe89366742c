"""`bevfusion-ros train --config C --dataroot D [--out DIR] [--epochs N] [--resume] ...`

Trains BEVFusion on a nuScenes-format dataroot (real or synthetic; every sample of the dataroot is used,
or the samples of ``--scenes``). Samples are preprocessed once into an npz cache (``--cache``), then
augmented on the fly (data/augment.py). Single process by default; under ``torchrun`` (``WORLD_SIZE > 1``)
it runs DistributedDataParallel with a DistributedSampler (NCCL on GPUs, Gloo on CPU), rank 0 writing
logs and checkpoints. AMP (fp16 autocast + GradScaler) on CUDA unless ``--no-amp``.

Outputs in ``--out``: ``last.pt`` (weights + config + metadata + optimizer/scheduler/step state; loads
with ``torch.load(weights_only=True)``, resumable with ``--resume``), written atomically every
``--checkpoint-minutes`` and at the end of every epoch; ``model.pt`` (weights + config + metadata only, for
shipping); ``loss_log.jsonl`` (one JSON object per logged step); ``train_config.yaml``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch

from bevfusion_ros.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="model YAML (models/bevfusion-tiny.yaml)")
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot (synthetic or real)")
    parser.add_argument("--out", default=None, help="output folder (default out/train-<config name>)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: config train.epochs)")
    parser.add_argument("--batch-size", type=int, default=None, help="per-process batch size (default: config)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: config)")
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers (default: config)")
    parser.add_argument("--cache", default=None, help="preprocessed-sample cache folder (default OUT/cache)")
    parser.add_argument("--scenes", default=None, help="comma list of scene names to train on (default: all)")
    parser.add_argument("--precache", action="store_true",
                        help="build the whole sample cache before training (default: lazily, in the loader)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--init", default=None, help="initialize weights from this checkpoint (fine-tuning)")
    parser.add_argument("--init-partial", action="store_true",
                        help="with --init: tensors the checkpoint lacks keep their fresh initialization (adding a "
                             "module, e.g. map.lidar_raster); every tensor it has must still fit the model")
    parser.add_argument("--train-only", default=None,
                        help="comma list of module-name prefixes to train (e.g. map_head); every other parameter "
                             "is frozen and its BatchNorm statistics kept")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="checkpoint interval (default 5)")
    parser.add_argument("--log-every", type=int, default=10, help="steps between loss-log lines (default 10)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    parser.add_argument("--seed", type=int, default=0, help="random seed (augmentation, init, shuffling)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def _dist_setup(device_arg: str | None) -> tuple[int, int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = (device_arg or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if want_cuda and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    if want_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return world, rank, local, device


def _to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif key == "points":
            out[key] = [v.to(device, non_blocking=True) for v in value]
        else:
            out[key] = value
    return out


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 1% of the peak."""
    if step < warmup:
        return peak * (0.1 + 0.9 * step / max(1, warmup))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def freeze_except(model: torch.nn.Module, prefixes: list[str]) -> list[torch.nn.Module]:
    """Freeze every parameter outside the modules named by ``prefixes`` (dotted names from
    ``named_modules``); returns the frozen modules that hold state the forward pass updates
    (BatchNorm), which the caller keeps in eval mode so their running statistics stay as trained --
    otherwise training one head would still shift the frozen trunk the other heads depend on."""
    names = dict(model.named_modules())
    unknown = [p for p in prefixes if p not in names]
    if unknown:
        raise UserError(f"--train-only: no module named {unknown}; top-level modules: "
                        f"{', '.join(n for n, _ in model.named_children())}")

    def trained(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    for name, param in model.named_parameters():
        param.requires_grad_(trained(name))
    return [m for n, m in model.named_modules()
            if not trained(n) and isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def train(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from bevfusion_ros.data.dataset import BEVFusionDataset, collate
    from bevfusion_ros.data.nuscenes_io import open_nuscenes
    from bevfusion_ros.model.bevfusion import BEVFusion
    from bevfusion_ros.model.checkpoint import load_into, read_checkpoint, save_checkpoint
    from bevfusion_ros.model.config import load_config
    from bevfusion_ros.model.losses import compute_losses

    if args.init_partial and not args.init:
        raise UserError("--init-partial needs --init CHECKPOINT (the checkpoint to start from)")
    config = load_config(args.config)
    tc = config.train
    epochs = args.epochs or tc.epochs
    batch_size = args.batch_size or tc.batch_size
    peak_lr = args.lr or tc.lr
    workers = tc.workers if args.workers is None else args.workers
    if args.threads:
        torch.set_num_threads(args.threads)
    world, rank, _local, device = _dist_setup(args.device)
    is_main = rank == 0
    out = Path(args.out or f"out/train-{config.name}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed + rank)
    np.random.seed(args.seed + rank)

    nusc = open_nuscenes(args.dataroot)
    tokens = [s["token"] for s in nusc.sample]
    if args.scenes:
        wanted = {s.strip() for s in args.scenes.split(",") if s.strip()}
        names = {sc["token"]: sc["name"] for sc in nusc.scene}
        unknown = wanted - set(names.values())
        if unknown:
            raise UserError(f"unknown scene(s) {sorted(unknown)} in {args.dataroot}")
        tokens = [s["token"] for s in nusc.sample if names[s["scene_token"]] in wanted]
    dataset = BEVFusionDataset(nusc, config, args.cache or out / "cache", tokens, train=True, seed=args.seed)
    # optionally build the cache up front (each rank its share), with a progress bar; otherwise the
    # loader's workers build each sample's cache on first use, overlapping with training
    missing = [t for t in tokens[rank::world] if args.precache and not dataset.cache_path(t).is_file()]
    for token in tqdm(missing, desc="caching samples", disable=args.no_progress or not is_main):
        dataset.build_cache(token)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()

    model = BEVFusion(config).to(device)
    fresh: list[str] = []
    if args.init:
        fresh = load_into(model, read_checkpoint(args.init), config, source=f"--init {args.init}",
                          allow_missing=args.init_partial)
        if fresh and is_main:
            print(f"--init-partial: {len(fresh)} tensor(s) not in {args.init} keep their initialization "
                  f"(e.g. {fresh[0]})")
    train_only = [p.strip() for p in (args.train_only or "").split(",") if p.strip()]
    frozen_modules = freeze_except(model, train_only) if train_only else []
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=peak_lr,
                                  weight_decay=tc.weight_decay)
    use_amp = device.type == "cuda" and tc.amp and not args.no_amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    steps_per_epoch = max(1, math.ceil(len(tokens) / (batch_size * world)))
    total_steps = steps_per_epoch * epochs
    warmup = min(200, max(1, total_steps // 20))
    step, start_epoch, trained_s = 0, 0, 0.0
    last = out / "last.pt"
    if args.resume:
        if not last.is_file():
            raise UserError(f"--resume: no checkpoint {last}")
        payload = read_checkpoint(last)
        load_into(model, payload, config, source=str(last))
        state = payload.get("train_state", {})
        if "optimizer" in state:
            try:
                optimizer.load_state_dict(state["optimizer"])
            except ValueError as err:   # parameter groups of another size: another --train-only
                raise UserError(f"--resume: the optimizer state in {last} does not fit this run's trainable "
                                f"parameters ({err}); resume with the --train-only of the run that wrote it"
                                ) from None
        if "scaler" in state and use_amp:
            scaler.load_state_dict(state["scaler"])
        step = int(state.get("step", 0))
        start_epoch = int(state.get("epoch", 0))
        trained_s = float(payload.get("metadata", {}).get("train_seconds", 0.0))
        if is_main:
            print(f"resumed from {last}: epoch {start_epoch}, step {step}")
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, world, rank, shuffle=True, seed=args.seed)
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(args.seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         collate_fn=collate, drop_last=False, persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda")
    if is_main:
        config.save(out / "train_config.yaml")
    log = open(out / "loss_log.jsonl", "a") if is_main else None
    stop = {"flag": False}

    def _on_signal(_signum, _frame):
        stop["flag"] = True

    old_handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    session_start = time.time()
    last_ckpt = time.time()

    def metadata(epoch: int) -> dict:
        return {"dataroot": str(args.dataroot), "samples": len(tokens), "epoch": epoch, "step": step,
                "train_seconds": trained_s + (time.time() - session_start), "world_size": world,
                "device": str(device), "batch_size": batch_size, "lr": peak_lr, "seed": args.seed,
                "torch": str(torch.__version__), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "init": args.init, "init_fresh_tensors": len(fresh), "train_only": train_only}

    def checkpoint(epoch: int) -> None:
        if not is_main:
            return
        state = {"optimizer": optimizer.state_dict(), "step": step, "epoch": epoch}
        if use_amp:
            state["scaler"] = scaler.state_dict()
        meta = metadata(epoch)
        save_checkpoint(last, model, config, meta, extra={"train_state": state})
        save_checkpoint(out / "model.pt", model, config, meta)

    model.train()
    for module in frozen_modules:
        module.eval()
    epoch = start_epoch
    smoothed: dict[str, float] = {}
    try:
        for epoch in range(start_epoch, epochs):
            if world > 1:
                sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=args.no_progress or not is_main,
                       dynamic_ncols=True)
            for batch in bar:
                batch = _to_device(batch, device)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, peak_lr, warmup)
                with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                    outputs = ddp_model(batch)
                losses = compute_losses(outputs, batch, config)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses["total"]).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                values = {k: float(v.detach()) for k, v in losses.items()}
                for k, v in values.items():
                    smoothed[k] = v if k not in smoothed else 0.9 * smoothed[k] + 0.1 * v
                if is_main:
                    bar.set_postfix(loss=f"{smoothed['total']:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
                    if step % args.log_every == 0 or step == 1:
                        log.write(json.dumps({"step": step, "epoch": epoch, "time_s": round(time.time() - session_start, 1),
                                              "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                                              **{k: round(v, 5) for k, v in values.items()}}) + "\n")
                        log.flush()
                if time.time() - last_ckpt > args.checkpoint_minutes * 60:
                    checkpoint(epoch)
                    last_ckpt = time.time()
                if args.max_minutes and time.time() - session_start > args.max_minutes * 60:
                    stop["flag"] = True
                if stop["flag"]:
                    break
            if stop["flag"]:
                break
            checkpoint(epoch + 1)
            last_ckpt = time.time()
        else:
            epoch = epochs
    finally:
        checkpoint(epoch)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if log is not None:
            log.close()
        if world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()
    return {"out": str(out), "steps": step, "epoch": epoch, "loss": smoothed.get("total")}


def run(args: argparse.Namespace) -> int:
    result = train(args)
    print(f"training stopped at epoch {result['epoch']}, step {result['steps']}, smoothed loss "
          f"{result['loss']}; checkpoints in {result['out']}")
    return 0
