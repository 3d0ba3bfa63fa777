"""The training loop: data and augmentation on the device, atomic per-epoch checkpoints, exact resume."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._version import __version__
from ..data import load_dataset
from ..errors import InputError
from ..labels import EMOTIONS
from ..metrics import classification_report
from .augment import augment
from .config import TrainConfig
from .models import FerNet, count_params, create_model

CHECKPOINT_FORMAT = "fer-edge-checkpoint"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file and rename, so a kill never leaves a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def to_input(x_uint8: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return (x_uint8.float() / 255.0 - cfg.mean) / cfg.std


@torch.no_grad()
def predict_logits(model: FerNet, images: torch.Tensor, cfg: TrainConfig, batch: int = 512) -> np.ndarray:
    """images: (N, 1, H, W) uint8 on the model's device."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = to_input(images[i : i + batch], cfg)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy()


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return 1.0


def checkpoint_payload(model: FerNet, cfg: TrainConfig, **extra: Any) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "fer_edge": __version__,
        "arch": model.arch,
        "num_classes": len(EMOTIONS),
        "labels": list(EMOTIONS),
        "feature_dim": model.feature_dim,
        "params": count_params(model),
        "input": {"size": [cfg.size, cfg.size], "scale": 1 / 255, "mean": [cfg.mean], "std": [cfg.std]},
        "config": cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def train(cfg: TrainConfig, *, resume: bool = False, log=print, command: str | None = None) -> dict[str, Any]:
    """Train `cfg.arch`; returns the best validation figures. Writes into cfg.out:
    last.pt (everything needed to resume), best.pt (weights at best val accuracy),
    metrics.jsonl (one line per epoch) and config.json. `command` (the CLI line that started
    the run) is stored in the checkpoints so an export can record how the model was made."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    t0 = time.time()
    size = (cfg.size, cfg.size)
    train_set = load_dataset(cfg.data, "train", size=size, limit_per_class=cfg.limit_per_class)
    val_set = load_dataset(cfg.data, "val", size=size, limit_per_class=cfg.limit_per_class)
    x_train = torch.from_numpy(train_set.images).unsqueeze(1).to(device)
    y_train = torch.from_numpy(train_set.labels).to(device)
    x_val = torch.from_numpy(val_set.images).unsqueeze(1).to(device)
    log(f"data: {len(train_set)} train, {len(val_set)} val images from {cfg.data} ({time.time() - t0:.1f} s)")

    model = create_model(cfg.arch, len(EMOTIONS)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise InputError(f"optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")
    steps_per_epoch = max(1, len(train_set) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps_per_epoch, cfg))
    plateau = None
    if cfg.schedule == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    elif cfg.schedule not in ("cosine", "constant"):
        raise InputError(f"schedule must be cosine, plateau or constant, got {cfg.schedule!r}")

    start_epoch, best, stale = 0, {"val_accuracy": -1.0}, 0
    last_path = out / "last.pt"
    if resume:
        if not last_path.is_file():
            raise InputError(f"--resume: no checkpoint at {last_path}")
        state = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if plateau is not None and state.get("plateau"):
            plateau.load_state_dict(state["plateau"])
        gen.set_state(state["rng"].to(gen.get_state().device) if hasattr(state["rng"], "to") else state["rng"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, stale = state["epoch"], state["best"], state["stale"]
        log(f"resumed from {last_path} after epoch {start_epoch}")
    else:
        (out / "metrics.jsonl").write_text("")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log(f"model: {cfg.arch}, {count_params(model):,} parameters, device {device}")

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t_epoch = time.time()
        perm = torch.randperm(len(y_train), device=device, generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = augment(x_train[idx].float() / 255.0, cfg.augment, gen)
            x = (x - cfg.mean) / cfg.std
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y_train[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if sys.stderr.isatty() and step % 10 == 0:
                print(f"\repoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps_per_epoch} loss {loss_sum / seen:.3f}",
                      end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        val = classification_report(val_set.labels, predict_logits(model, x_val, cfg).argmax(1), EMOTIONS)
        if plateau is not None:
            plateau.step(val["accuracy"])
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.time() - t_epoch,
        }
        improved = val["accuracy"] > best["val_accuracy"]
        if improved:
            best, stale = dict(row), 0
            save_atomic(checkpoint_payload(model, cfg, epoch=epoch + 1, val=val, command=command), out / "best.pt")
        else:
            stale += 1
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        save_atomic(
            {
                **checkpoint_payload(model, cfg, epoch=epoch + 1, command=command),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "plateau": plateau.state_dict() if plateau is not None else None,
                "rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "best": best,
                "stale": stale,
            },
            last_path,
        )
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} train acc {row['train_accuracy']:.4f} "
            f"val acc {row['val_accuracy']:.4f} macro-F1 {row['val_macro_f1']:.4f} lr {row['lr']:.4g} "
            f"({row['seconds']:.0f} s){' *' if improved else ''}"
        )
        if cfg.early_stop_patience and stale >= cfg.early_stop_patience:
            log(f"early stop: no val improvement for {stale} epochs")
            break
    return best
