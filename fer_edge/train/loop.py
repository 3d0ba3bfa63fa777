"""The training loop: data and augmentation on the device, atomic per-epoch checkpoints, exact resume.

One epoch = a sampler draws (steps, batch) indices on the device, each step gathers its uint8
batch from the device-resident dataset, augments it in one batched call and takes a `TrainStep`.
Under torchrun the ranks share each global batch; rank 0 validates, decides and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._version import __version__
from ..data import load_dataset
from ..errors import DataError, InputError, RuntimeUnavailableError
from ..labels import EMOTIONS
from ..metrics import classification_report
from . import distributed as ddp
from .augment import augment, median_filter, mix
from .checkpoint import CHECKPOINT_FORMAT, checkpoint_payload, input_spec, save_atomic  # noqa: F401 (re-exported)
from .config import TrainConfig
from .ema import EMA
from .models import FerNet, WithEmbedding, count_params, create_model, set_trainable
from .preprocess import scale, standardise
from .progress import Progress
from .sampling import epoch_indices, rank_share
from .tta import predict_tta

FER2013_TRAIN_IMAGES = 28709  # for epoch-time projections


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeUnavailableError(f"device {name!r} requested but torch sees no CUDA device "
                                      f"(torch {torch.__version__}); use device 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from e


def use_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: on CUDA by default, on request elsewhere, never silently dropped."""
    if cfg.amp == "off":
        return False
    if cfg.amp == "auto":
        return device.type == "cuda"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeUnavailableError(f"amp 'bf16' requested but {torch.cuda.get_device_name(device)} has no bf16")
    return True


def to_input(x_uint8: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    spec = input_spec(cfg)
    return standardise(scale(x_uint8, spec), spec)


def predict_logits(model: FerNet, images: torch.Tensor, cfg: TrainConfig, batch: int = 512) -> np.ndarray:
    """images: (N, 1, H, W) uint8 -> logits (no test-time augmentation) as numpy."""
    return predict_tta(model, images, cfg, "none", batch=batch, channels_last=cfg.channels_last).numpy()


OPTIMIZERS: dict[str, Callable[[Any, TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum,
                                             nesterov=c.nesterov and c.momentum > 0, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
}


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Frozen parameters stay in the optimizer: they get no gradient, so it skips them, and
    # unfreezing after a transfer phase needs no new optimizer.
    return OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)


@dataclass
class Plateau:
    """ReduceLROnPlateau's decision on one scalar per epoch (torch's own class would fight the
    per-step warmup/cosine LambdaLR over the optimizer's lr, so the two compose as factors)."""

    mode: str  # max | min
    patience: int
    factor: float
    scale: float = 1.0
    best: float | None = None
    bad_epochs: int = 0
    threshold: float = 1e-4

    def step(self, value: float) -> bool:
        if self.best is None or (value > self.best + self.threshold if self.mode == "max"
                                 else value < self.best - self.threshold):
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale *= self.factor
            self.bad_epochs = 0
            return True
        return False


def metric_mode(name: str) -> str:
    return "min" if name.endswith("loss") else "max"


def is_better(value: float, best: float | None, name: str) -> bool:
    return best is None or (value < best if metric_mode(name) == "min" else value > best)


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig, plateau_scale: float = 1.0,
              progress: float | None = None) -> float:
    """Multiplier of the base learning rate at optimizer step `step`: linear warmup, then the
    schedule's shape (cosine to zero, or flat), times the plateau reductions so far. `progress`
    (0..1, from a `BudgetClock`) replaces the step count as the cosine's position."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm * plateau_scale
    if cfg.schedule == "cosine":
        if progress is None:
            total = cfg.epochs * steps_per_epoch
            progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return plateau_scale


class BudgetClock:
    """Training progress as a fraction of the time budget (schedule_by_time): the span is the
    budget less what this call spent before training (data, model) and a reserve for one more
    epoch and the final test, re-estimated after every epoch from the epochs' own durations.
    `elapsed` is the training time of earlier calls (--resume): the budget covers the whole run."""

    def __init__(self, cfg: TrainConfig, t_start: float, elapsed: float = 0.0):
        self.budget = (cfg.time_budget_min or 0.0) * 60
        self.test_at_end = cfg.test_at_end
        self.t0 = time.time() - elapsed
        self.pre = time.time() - t_start
        self.reserve = 10.0

    def elapsed(self) -> float:
        return time.time() - self.t0

    def observe(self, epoch_seconds: list[float]) -> None:
        typical = max(epoch_seconds[1:] or epoch_seconds)
        self.reserve = 1.1 * typical + (2 * epoch_seconds[-1] if self.test_at_end else 0) + 5.0

    def progress(self) -> float:
        span = self.budget - self.pre - self.reserve
        return self.elapsed() / max(span, 1e-6)


def compile_module(module: torch.nn.Module, spec: str) -> torch.nn.Module:
    if spec == "off":
        return module
    if spec in ("inductor", "aot_eager", "eager"):
        return torch.compile(module, backend=spec)
    return torch.compile(module, mode=spec)


def phase_at(cfg: TrainConfig, epoch: int) -> str:
    """The set_trainable regime of a 0-based epoch."""
    if cfg.regime == "finetune" and epoch < cfg.transfer_epochs:
        return "transfer"
    return cfg.regime


class TrainStep:
    """One optimisation step on a uint8 batch already on the device: augment, normalise,
    forward (logits and embedding in one call, so DDP and torch.compile see a single forward),
    loss, backward, optimizer step and LR step."""

    def __init__(self, model: FerNet, criterion: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, cfg: TrainConfig, device: torch.device,
                 aug_gen: torch.Generator, env: ddp.DistEnv = ddp.DistEnv(), *, amp: bool = False):
        self.model, self.criterion, self.optimizer, self.scheduler = model, criterion, optimizer, scheduler
        self.cfg, self.device, self.gen, self.env, self.amp = cfg, device, aug_gen, env, amp
        self.spec = input_spec(cfg)
        self.needs_inputs = cfg.loss == "distill"  # the teacher sees the same augmented images
        self.forward: torch.nn.Module = model
        self.rewrap()

    def rewrap(self) -> None:
        """(Re)build the forward module; call after changing which parameters are trainable."""
        fwd = ddp.wrap(WithEmbedding(self.model), self.env, self.device, find_unused=self.cfg.loss == "triplet")
        self.forward = compile_module(fwd, self.cfg.compile)

    def __call__(self, x_uint8: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        cfg = self.cfg
        x, targets = mix(augment(scale(x_uint8, self.spec), cfg.augment, self.gen), y, cfg.augment, self.gen)
        inputs = None
        if self.needs_inputs:
            inputs = (x * 255).round().to(torch.uint8)
            x = scale(inputs, self.spec)
        x = standardise(x, self.spec)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with autocast:
            logits, embedding = self.forward(x)
        loss, parts = self.criterion(logits.float(), embedding.float(), targets, inputs_uint8=inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), logits.detach(), parts


def build_criterion_for(cfg: TrainConfig, train_labels: np.ndarray, device: torch.device) -> torch.nn.Module:
    from .losses import TripletConfig, build_criterion, class_weights_from_counts, load_teacher

    weights = None
    if cfg.class_weights == "balanced":
        weights = class_weights_from_counts(np.bincount(train_labels, minlength=len(EMOTIONS))).to(device)
    teacher = load_teacher(cfg.distill_teacher, device) if cfg.loss == "distill" else None
    triplet = TripletConfig(margin=cfg.triplet_margin, mining=cfg.triplet_mining, distance=cfg.triplet_distance,
                            weight=cfg.triplet_weight)
    criterion = build_criterion(cfg.loss, num_classes=len(EMOTIONS), label_smoothing=cfg.label_smoothing,
                                class_weights=weights, triplet=triplet, teacher=teacher,
                                distill_alpha=cfg.distill_alpha, distill_temperature=cfg.distill_temperature)
    return criterion.to(device)


def build_model(cfg: TrainConfig, device: torch.device) -> FerNet:
    kwargs = {"pretrained": cfg.pretrained} if cfg.pretrained else {}
    model = create_model(cfg.arch, len(EMOTIONS), **kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


CENTROID_SCALE = 10.0  # cosine similarities in [-1, 1] -> logits with a usable cross-entropy


def evaluate_split(model: FerNet, images: torch.Tensor, labels: np.ndarray, cfg: TrainConfig, mode: str,
                   amp: bool = False, reference: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Accuracy, macro figures and mean cross-entropy of raw uint8 images under a TTA mode.

    `reference` (uint8 images, labels from the train split) switches from the network's logits
    to the nearest class centroid of the L2-normalised embeddings: a net trained by a pure
    triplet loss has an untrained classifier, and its embedding is what gets judged."""
    kw = {"crop": cfg.tta_crop, "channels_last": cfg.channels_last, "amp": amp}
    if reference is None:
        logits = predict_tta(model, images, cfg, mode, **kw)
    else:
        ref = F.normalize(predict_tta(model, reference[0], cfg, "none", output="embedding", **kw), dim=1)
        ref_y = torch.from_numpy(reference[1])
        centroids = torch.stack([ref[ref_y == c].mean(0) for c in range(len(EMOTIONS))]).nan_to_num(0.0)
        emb = F.normalize(predict_tta(model, images, cfg, mode, output="embedding", **kw), dim=1)
        logits = CENTROID_SCALE * emb @ F.normalize(centroids, dim=1).T
    report = classification_report(labels, logits.argmax(1).numpy(), EMOTIONS)
    report["loss"] = float(F.cross_entropy(logits, torch.from_numpy(labels)))
    report["tta"] = mode
    report["classifier"] = "logits" if reference is None else "embedding centroids"
    return report


def centroid_reference(cfg: TrainConfig, train_images: np.ndarray, train_labels: np.ndarray, limit: int = 4096):
    """A fixed random subset of the train split whose class centroids judge a triplet-only net."""
    if cfg.loss != "triplet":
        return None
    pick = np.random.default_rng(cfg.seed).permutation(len(train_labels))[:limit]
    return train_images[pick][:, None], train_labels[pick]


def _load_splits(cfg: TrainConfig, device: torch.device):
    root = Path(cfg.data)
    if root.suffix.lower() != ".csv" and not ((root / "train").is_dir() and (root / "val").is_dir()):
        raise DataError(f"{root}: training needs train/ and val/ split folders (ImageFolder) or fer2013.csv")
    size = (cfg.size, cfg.size)
    train_set = load_dataset(cfg.data, "train", size=size, limit_per_class=cfg.limit_per_class)
    val_set = load_dataset(cfg.data, "val", size=size, limit_per_class=cfg.limit_per_class)
    x_train = torch.from_numpy(train_set.images).unsqueeze(1).to(device)
    if cfg.median_filter:  # once, before augmentation, as the paper preprocesses
        x_train = median_filter(x_train, cfg.median_filter)
    y_train = torch.from_numpy(train_set.labels).to(device)
    x_val = torch.from_numpy(val_set.images).unsqueeze(1).to(device)  # predict_tta filters it itself
    return train_set, val_set, x_train, y_train, x_val


def _rng_state(data_gen: torch.Generator, aug_gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    return {"data": data_gen.get_state(), "aug": aug_gen.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict[str, Any], data_gen: torch.Generator, aug_gen: torch.Generator,
                   device: torch.device) -> None:
    data_gen.set_state(state["data"])
    aug_gen.set_state(state["aug"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _read_metrics(path: Path, upto_epoch: int) -> list[str]:
    """metrics.jsonl lines up to an epoch: a kill between the metrics line and last.pt leaves
    one line that the resumed run writes again."""
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] <= upto_epoch]


def train(cfg: TrainConfig, *, resume: bool = False, log=print, command: str | None = None) -> dict[str, Any]:
    """Train `cfg.arch`; returns the best validation figures. Writes into cfg.out:
    last.pt (everything needed to resume), best.pt (weights at the best `cfg.monitor`),
    metrics.jsonl (one line per epoch), config.json and, with test_at_end, test.json.
    `command` (the CLI line that started the run) is stored in the checkpoints so an export
    can record how the model was made. Under torchrun (RANK/WORLD_SIZE set) the processes
    train one model with DistributedDataParallel."""
    env = ddp.detect()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = ddp.setup(env, resolve_device(cfg.device))
    try:
        return _train(cfg, env, device, resume=resume, log=log if env.is_main else (lambda *_: None),
                      command=command)
    finally:
        ddp.teardown(env)


def _train(cfg: TrainConfig, env: ddp.DistEnv, device: torch.device, *, resume: bool, log, command: str | None):
    t_start = time.time()
    out = Path(cfg.out)
    last_path, best_path, metrics_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    if resume and not last_path.is_file():
        raise InputError(f"--resume: no checkpoint at {last_path}")
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
    amp = use_amp(cfg, device)
    torch.manual_seed(cfg.seed + env.rank)
    data_gen = torch.Generator(device=device).manual_seed(cfg.seed)  # same on every rank
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * (env.rank + 1))

    train_set, val_set, x_train, y_train, x_val = _load_splits(cfg, device)
    log(f"data: {len(train_set)} train, {len(val_set)} val images from {cfg.data} ({time.time() - t_start:.1f} s)")
    batch = min(cfg.batch_size, len(train_set))
    if batch < env.world_size:
        raise InputError(f"batch_size {batch} is smaller than the {env.world_size} processes sharing it")
    steps_per_epoch = max(1, len(train_set) // batch)

    model = build_model(cfg, device)
    criterion = build_criterion_for(cfg, train_set.labels, device)
    opt = build_optimizer(model, cfg)
    plateau = Plateau(metric_mode(cfg.plateau_metric), cfg.plateau_patience, cfg.plateau_factor)
    clock: BudgetClock | None = None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(
        s, steps_per_epoch, cfg, plateau.scale, clock.progress() if clock is not None else None))
    step = TrainStep(model, criterion, opt, sched, cfg, device, aug_gen, env, amp=amp)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    reference = centroid_reference(cfg, train_set.images, train_set.labels)

    start_epoch, best, best_value, stale, elapsed_before = 0, {}, None, 0, 0.0
    if resume:
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        if "best_value" not in state or not isinstance(state.get("rng"), list):
            raise InputError(f"{last_path} was written by an older fer-edge (fer_edge {state.get('fer_edge')}) "
                             "whose resume state this version cannot continue; start a new run")
        changed = {k: (v, cfg.to_dict().get(k)) for k, v in state["config"].items()
                   if cfg.to_dict().get(k) != v and k not in ("time_budget_min", "threads")}
        if changed:
            log(f"warning: resuming with changed options (saved, now): {changed}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        for k, v in state["plateau"].items():
            setattr(plateau, k, v)
        rngs = state["rng"]
        if len(rngs) != env.world_size:
            log(f"warning: last.pt was written by {len(rngs)} processes, now {env.world_size}: the run continues "
                "but its random streams differ from an uninterrupted one")
        _set_rng_state(rngs[env.rank % len(rngs)], data_gen, aug_gen, device)
        start_epoch, best, best_value, stale = state["epoch"], state["best"], state["best_value"], state["stale"]
        if ema is not None:
            if "ema" not in state:
                raise InputError(f"{last_path} has no EMA state but ema_decay={cfg.ema_decay}: resume with the "
                                 "options it was started with")
            ema.load_state_dict(state["ema"])
        elapsed_before = float(state.get("train_seconds", 0.0))
        log(f"resumed from {last_path} after epoch {start_epoch}")
    if env.is_main:
        kept = _read_metrics(metrics_path, start_epoch) if resume else []
        metrics_path.write_text("".join(line + "\n" for line in kept))
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log(f"model: {cfg.arch}, {count_params(model):,} parameters, device {device}"
        f"{f' x {env.world_size} processes' if env.enabled else ''}, amp {'bf16' if amp else 'off'}, "
        f"{steps_per_epoch} steps of {batch} per epoch")

    if cfg.schedule_by_time:
        clock = BudgetClock(cfg, t_start, elapsed_before)
    phase, stop, epoch_seconds = None, None, []
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        if phase_at(cfg, epoch) != phase:
            phase = phase_at(cfg, epoch)
            set_trainable(model, phase)
            step.rewrap()
            if epoch > start_epoch or phase != "scratch":
                log(f"epoch {epoch + 1}: regime {phase} "
                    f"({sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters)")
        model.train()  # FerNet keeps a frozen trunk's BatchNorm in eval mode
        order = epoch_indices(y_train, steps_per_epoch, batch, data_gen, cfg.sampler)
        sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss x n, correct, n
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", enabled=env.is_main)
        for s in range(steps_per_epoch):
            idx = rank_share(order[s], env.rank, env.world_size)
            y = y_train[idx]
            loss, logits, _ = step(x_train[idx], y)
            if ema is not None:
                ema.update()
            sums += torch.stack([loss.double() * len(y), (logits.argmax(1) == y).sum().double(),
                                 torch.tensor(float(len(y)), device=device, dtype=torch.float64)])
            if bar.active and (s % 20 == 0 or s == steps_per_epoch - 1):  # a sync, so not every step
                bar.update(s + 1 - bar.done, loss=float(sums[0] / sums[2]))
        bar.close()
        loss_sum, correct, seen = ddp.all_sum(sums.tolist(), env)
        train_seconds = time.time() - t_epoch

        decision = None
        if env.is_main:
            with ema.applied(model) if ema is not None else contextlib.nullcontext():
                val = evaluate_split(model, x_val, val_set.labels, cfg, cfg.tta, amp, reference)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                   "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "val_loss": val["loss"],
                   "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t_epoch,
                   "images_per_s": seen / max(train_seconds, 1e-9)}
            if cfg.schedule == "plateau" and plateau.step(row[cfg.plateau_metric]):
                row["lr_reduced_to"] = cfg.lr * plateau.scale
            improved = is_better(row[cfg.monitor], best_value, cfg.monitor)
            decision = {"row": row, "val": val, "improved": improved, "plateau": asdict(plateau)}
        decision = ddp.broadcast(decision, env)
        row, improved = decision["row"], decision["improved"]
        for k, v in decision["plateau"].items():
            setattr(plateau, k, v)
        if improved:
            best, best_value, stale = dict(row), row[cfg.monitor], 0
        else:
            stale += 1

        rngs = ddp.gather(_rng_state(data_gen, aug_gen, device), env)
        if env.is_main:
            if improved:
                save_atomic(checkpoint_payload(model, cfg, ema.shadow if ema is not None else None, epoch=epoch + 1,
                                               val=decision["val"], command=command), best_path)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            save_atomic({**checkpoint_payload(model, cfg, epoch=epoch + 1, command=command),
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "plateau": asdict(plateau),
                         "rng": rngs, "best": best, "best_value": best_value, "stale": stale,
                         "world_size": env.world_size, "train_seconds": clock.elapsed() if clock else 0.0,
                         **({"ema": ema.state_dict()} if ema is not None else {})}, last_path)
        epoch_seconds.append(time.time() - t_epoch)
        if clock is not None:
            clock.observe(epoch_seconds)
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} train acc {row['train_accuracy']:.4f} "
            f"val acc {row['val_accuracy']:.4f} macro-F1 {row['val_macro_f1']:.4f} val loss {row['val_loss']:.4f} "
            f"lr {row['lr']:.4g} ({row['seconds']:.1f} s, {row['images_per_s']:.0f} img/s){' *' if improved else ''}")

        stop = _stop_reason(cfg, row, stale, epoch_seconds, t_start, clock)
        stop = ddp.broadcast(stop, env)
        if stop:
            log(stop)
            break

    result = dict(best)
    if stop:
        result["stopped"] = stop
    if cfg.test_at_end and env.is_main:
        result["test"] = _final_test(cfg, device, amp, log, reference)
    return result


def _stop_reason(cfg: TrainConfig, row: dict, stale: int, epoch_seconds: list[float], t_start: float,
                 clock: BudgetClock | None = None) -> str | None:
    if clock is not None and clock.progress() >= 1.0:
        return (f"schedule complete: the cosine ran over the {cfg.time_budget_min}-min budget "
                f"({row['epoch']} epochs, {clock.elapsed() / 60:.1f} min of training)")
    if cfg.early_stop_patience and stale >= cfg.early_stop_patience:
        return f"early stop: no {cfg.monitor} improvement for {stale} epochs"
    if cfg.stop_at_val_accuracy is not None and row["val_accuracy"] >= cfg.stop_at_val_accuracy:
        return f"stop: val accuracy {row['val_accuracy']:.4f} reached {cfg.stop_at_val_accuracy}"
    if cfg.time_budget_min is not None and row["epoch"] < cfg.epochs:
        elapsed = time.time() - t_start
        # The slowest epoch so far (the first includes compilation) plus, with a final test, two
        # more validations' worth: stop while it still fits.
        need = max(epoch_seconds) * 1.1 + (2 * epoch_seconds[-1] if cfg.test_at_end else 0)
        if elapsed + need > cfg.time_budget_min * 60:
            return (f"time budget: stopping after epoch {row['epoch']} of {cfg.epochs} ({elapsed / 60:.1f} of "
                    f"{cfg.time_budget_min} min used); last.pt is saved, continue with --resume")
    return None


def _final_test(cfg: TrainConfig, device: torch.device, amp: bool, log, reference=None) -> dict[str, Any]:
    """best.pt on the test split, plain and with the configured TTA, into OUT/test.json. A quick
    check on a slice (limit_per_class) tests on the same slice of test/, and test.json says so."""
    root = Path(cfg.data)
    if root.suffix.lower() != ".csv" and not (root / "test").is_dir():
        log(f"test_at_end: {root} has no test/ split; skipped")
        return {}
    test_set = load_dataset(cfg.data, "test", size=(cfg.size, cfg.size), limit_per_class=cfg.limit_per_class)
    best = torch.load(Path(cfg.out) / "best.pt", map_location="cpu", weights_only=True)
    model = create_model(cfg.arch, len(EMOTIONS)).to(device)
    model.load_state_dict(best["model"])
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x_test = torch.from_numpy(test_set.images).unsqueeze(1).to(device)
    results = {}
    for mode in dict.fromkeys(("none", cfg.tta, cfg.test_tta or cfg.tta)):
        r = evaluate_split(model, x_test, test_set.labels, cfg, mode, amp, reference)
        results[mode] = r
        log(f"test ({len(test_set)} images, best.pt from epoch {best['epoch']}, tta {mode}): accuracy "
            f"{r['accuracy']:.4f} macro-F1 {r['macro_f1']:.4f}")
    (Path(cfg.out) / "test.json").write_text(json.dumps({"epoch": best["epoch"], "n": len(test_set),
                                                         "limit_per_class": cfg.limit_per_class, "results": results},
                                                        indent=2))
    return {mode: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]} for mode, r in results.items()}
