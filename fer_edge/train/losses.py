"""Training criteria: cross-entropy, triplet loss on the embedding, knowledge distillation.

Every criterion is called the same way by the loop:
`loss, stats = criterion(logits, embedding, targets, inputs_uint8)`, where `embedding` is the
network's global-average-pooled vector (`FerNet.forward_features`) and `inputs_uint8` the
augmented batch before normalisation (what a teacher sees). `needs_embedding` tells the loop
whether it must produce the embedding; `stats` are floats for the log.

Kinds (`build_criterion`):
* `ce`: cross-entropy, with label smoothing and per-class weights for FER2013's imbalance.
* `triplet`: only the triplet loss; trains the embedding alone. The network still has its
  classifier, but it gets no gradient, so its logits (and the loop's validation accuracy from
  them) mean nothing: the classifier of a triplet-trained net is fitted afterwards on the
  embeddings by the heads (`fer-edge fit-head`), as Liman & Kusuma (2024) do.
* `ce+triplet`: cross-entropy + `triplet.weight` x triplet.
* `distill`: alpha x KL(teacher || student at temperature T) x T^2 + (1 - alpha) x cross-entropy
  (Hinton et al. 2015; the T^2 keeps the soft term's gradients on the scale of the hard one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FerEdgeError, InputError
from .augment import MixedTargets

Teacher = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TripletConfig:
    margin: float = 0.2
    mining: str = "batch_hard"  # random | semihard | batch_hard
    distance: str = "euclidean"  # euclidean | cosine | manhattan
    weight: float = 1.0  # of the triplet term in "ce+triplet" (and a plain scale in "triplet")

    def __post_init__(self) -> None:
        if self.mining not in MINERS:
            raise InputError(f"triplet mining must be one of {sorted(MINERS)}, got {self.mining!r}")
        if self.distance not in DISTANCES:
            raise InputError(f"triplet distance must be one of {sorted(DISTANCES)}, got {self.distance!r}")
        if not self.margin >= 0:
            raise InputError(f"triplet margin must be >= 0, got {self.margin!r}")
        if not self.weight > 0:
            raise InputError(f"triplet weight must be > 0, got {self.weight!r}")


def class_weights_from_counts(counts) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1 (so the loss keeps its scale)."""
    c = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if c.numel() < 2 or not torch.isfinite(c).all() or (c <= 0).any():
        raise InputError(f"class counts must be two or more positive numbers, got {c.tolist()}; "
                         "a class with no examples has no weight (drop it or add data)")
    w = 1.0 / c
    return (w / w.mean()).float()


# --------------------------------------------------------------------------- distances

def _euclidean(e: torch.Tensor) -> torch.Tensor:
    # From the Gram matrix (unit vectors: |a-b|^2 = 2 - 2 a.b), so memory is N x N, not N x N x D.
    # The clamp keeps sqrt's gradient finite for identical embeddings.
    sq = (2.0 - 2.0 * (e @ e.T)).clamp_min(1e-12)
    return sq.sqrt()


def _cosine(e: torch.Tensor) -> torch.Tensor:
    return 1.0 - e @ e.T


def _manhattan(e: torch.Tensor) -> torch.Tensor:
    return torch.cdist(e, e, p=1.0)


DISTANCES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "euclidean": _euclidean,
    "cosine": _cosine,
    "manhattan": _manhattan,
}


# --------------------------------------------------------------------------- mining
# Each miner takes the distance matrix D (N x N), the same-class mask (N x N, diagonal excluded
# from positives by the caller) and the margin, and returns the per-triplet losses (a 1-D tensor,
# one entry per triplet it formed; empty when the batch allows none).

def _batch_hard(d: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Per anchor: its farthest positive against its nearest negative (Hermans et al. 2017)."""
    valid = pos.any(1) & neg.any(1)
    hardest_pos = d.masked_fill(~pos, float("-inf")).amax(1)
    hardest_neg = d.masked_fill(~neg, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid]


def _pair_negatives(d: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
    """Every (anchor, positive) pair whose anchor has a negative: indices and d(a, p)."""
    a, p = (pos & neg.any(1, keepdim=True)).nonzero(as_tuple=True)
    return a, p, d[a, p]


def _semihard(d: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Per (anchor, positive) pair: the nearest negative farther than the positive but within the
    margin (FaceNet's semi-hard negatives); the hardest negative when there is none."""
    a, _, d_ap = _pair_negatives(d, pos, neg)
    d_an = d[a]  # (pairs, N)
    negs = neg[a]
    semi = negs & (d_an > d_ap[:, None]) & (d_an < d_ap[:, None] + margin)
    nearest_semi = d_an.masked_fill(~semi, float("inf")).amin(1)
    hardest = d_an.masked_fill(~negs, float("inf")).amin(1)
    chosen = torch.where(semi.any(1), nearest_semi, hardest)
    return F.relu(d_ap - chosen + margin)


def _random(d: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Per (anchor, positive) pair: one negative drawn uniformly (torch's global RNG of the device)."""
    a, _, d_ap = _pair_negatives(d, pos, neg)
    if len(a) == 0:
        return d_ap
    n = torch.multinomial(neg[a].float(), 1).squeeze(1)
    return F.relu(d_ap - d[a, n] + margin)


MINERS: dict[str, Callable[..., torch.Tensor]] = {
    "random": _random,
    "semihard": _semihard,
    "batch_hard": _batch_hard,
}


class TripletLoss(nn.Module):
    """Triplet loss on L2-normalised embeddings, vectorised over the batch: max(0, D(a,p) - D(a,n) + margin),
    averaged over the triplets the miner forms. Returns (loss, number of triplets with loss > 0)."""

    def __init__(self, cfg: TripletConfig = TripletConfig()):
        super().__init__()
        self.cfg = cfg

    def forward(self, embedding: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        if embedding.dim() != 2 or embedding.shape[0] != targets.shape[0]:
            raise InputError(f"triplet loss needs embeddings (N, D) and N targets, got {tuple(embedding.shape)} "
                             f"and {tuple(targets.shape)}")
        e = F.normalize(embedding.float(), dim=1)
        d = DISTANCES[self.cfg.distance](e)
        same = targets[:, None] == targets[None, :]
        eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
        losses = MINERS[self.cfg.mining](d, same & ~eye, ~same, self.cfg.margin)
        if losses.numel() == 0:  # one class only in the batch: no triplet, but keep the graph
            return e.sum() * 0.0, 0
        return losses.mean(), int((losses > 0).sum())


# --------------------------------------------------------------------------- criteria

class Criterion(nn.Module):
    needs_embedding: bool = False

    def forward(self, logits: torch.Tensor, embedding: torch.Tensor | None, targets: torch.Tensor,
                inputs_uint8: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class _CE(nn.Module):
    def __init__(self, num_classes: int, label_smoothing: float, class_weights: torch.Tensor | None):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise InputError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
            if class_weights.numel() != num_classes or not (class_weights > 0).all():
                raise InputError(f"class_weights must be {num_classes} positive numbers, got {class_weights.tolist()}")
        self.register_buffer("weight", class_weights)
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise InputError(f"expected logits (N, {self.num_classes}), got {tuple(logits.shape)}")
        weight = None if self.weight is None else self.weight.to(logits.device)  # in case .to(device) was missed
        if isinstance(targets, MixedTargets):  # a mixed batch: the same blend of the two classes' losses
            return (targets.lam * self(logits, targets.a) + (1 - targets.lam) * self(logits, targets.b))
        return F.cross_entropy(logits.float(), targets, weight=weight, label_smoothing=self.label_smoothing)


class CECriterion(Criterion):
    def __init__(self, ce: _CE):
        super().__init__()
        self.ce = ce

    def forward(self, logits, embedding, targets, inputs_uint8=None):
        loss = self.ce(logits, targets)
        return loss, {"ce": float(loss.detach())}


class TripletCriterion(Criterion):
    """Triplet loss, plus cross-entropy when `ce` is given ("ce+triplet")."""

    needs_embedding = True

    def __init__(self, triplet: TripletConfig, ce: _CE | None = None):
        super().__init__()
        self.triplet = TripletLoss(triplet)
        self.weight = triplet.weight
        self.ce = ce

    def forward(self, logits, embedding, targets, inputs_uint8=None):
        if embedding is None:
            raise InputError("a triplet criterion needs the embedding (criterion.needs_embedding is True)")
        if isinstance(targets, MixedTargets):
            raise InputError("a triplet loss needs one class per image; turn off augment.mixup_alpha / cutmix_alpha")
        tri, active = self.triplet(embedding, targets)
        loss = self.weight * tri
        stats = {"triplet": float(tri.detach()), "active_triplets": float(active)}
        if self.ce is not None:
            ce = self.ce(logits, targets)
            loss = loss + ce
            stats["ce"] = float(ce.detach())
        return loss, stats


class DistillCriterion(Criterion):
    """alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * CE(s, y)."""

    def __init__(self, teacher: Teacher, ce: _CE, alpha: float, temperature: float):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"distill_alpha must be in [0, 1], got {alpha!r}")
        if not temperature > 0:
            raise InputError(f"distill_temperature must be > 0, got {temperature!r}")
        self.teacher, self.ce, self.alpha, self.temperature = teacher, ce, alpha, temperature

    def forward(self, logits, embedding, targets, inputs_uint8=None):
        if inputs_uint8 is None:
            raise InputError("distillation needs the uint8 input batch (inputs_uint8) to run the teacher on")
        with torch.no_grad():
            t_logits = self.teacher(inputs_uint8).to(device=logits.device, dtype=torch.float32)
        if t_logits.shape != logits.shape:
            raise InputError(f"teacher gives logits {tuple(t_logits.shape)}, student {tuple(logits.shape)}; "
                             "they must share the batch and the classes")
        T = self.temperature
        kl = F.kl_div(F.log_softmax(logits.float() / T, 1), F.log_softmax(t_logits / T, 1), reduction="batchmean",
                      log_target=True) * (T * T)
        ce = self.ce(logits, targets)
        loss = self.alpha * kl + (1 - self.alpha) * ce
        agree = (t_logits.argmax(1) == logits.argmax(1)).float().mean()
        return loss, {"kd": float(kl.detach()), "ce": float(ce.detach()), "teacher_agreement": float(agree)}


def _ce_kind(kw) -> Criterion:
    return CECriterion(kw["ce"])


def _triplet_kind(kw) -> Criterion:
    return TripletCriterion(kw["triplet"] or TripletConfig())


def _ce_triplet_kind(kw) -> Criterion:
    return TripletCriterion(kw["triplet"] or TripletConfig(), kw["ce"])


def _distill_kind(kw) -> Criterion:
    teacher = kw["teacher"]
    if teacher is None:
        raise InputError("kind 'distill' needs a teacher: a fer-edge checkpoint (.pt), a bundle folder, "
                         "or a callable from load_teacher()")
    if isinstance(teacher, (str, os.PathLike)):
        teacher = load_teacher(teacher, "cpu")
    if not callable(teacher):
        raise InputError(f"teacher must be a path or a callable uint8 batch -> logits, got {type(teacher).__name__}")
    return DistillCriterion(teacher, kw["ce"], kw["distill_alpha"], kw["distill_temperature"])


CRITERIA: dict[str, Callable[[dict], Criterion]] = {
    "ce": _ce_kind,
    "triplet": _triplet_kind,
    "ce+triplet": _ce_triplet_kind,
    "distill": _distill_kind,
}


def build_criterion(kind: str, *, num_classes: int, label_smoothing: float = 0.0,
                    class_weights: torch.Tensor | None = None, triplet: TripletConfig | None = None, teacher=None,
                    distill_alpha: float = 0.5, distill_temperature: float = 4.0) -> Criterion:
    if kind not in CRITERIA:
        raise InputError(f"loss kind must be one of {sorted(CRITERIA)}, got {kind!r}")
    if triplet is not None and not isinstance(triplet, TripletConfig):
        raise InputError(f"triplet must be a TripletConfig, got {type(triplet).__name__}")
    ce = _CE(num_classes, label_smoothing, class_weights)
    return CRITERIA[kind](dict(ce=ce, triplet=triplet, teacher=teacher, distill_alpha=distill_alpha,
                               distill_temperature=distill_temperature))


# --------------------------------------------------------------------------- teachers

def load_teacher(path: str | os.PathLike, device) -> Teacher:
    """A frozen teacher: uint8 (N, 1, H, W) -> logits (N, C) on `device`.

    `path` is a fer-edge checkpoint (.pt: the network is rebuilt, in eval mode, without gradients,
    fed with the checkpoint's own input normalisation and size) or a bundle folder / zip (its FP32
    ONNX run by ONNX Runtime on the CPU, preprocessed exactly as the bundle's runtime does)."""
    if isinstance(path, str) and "," in path:
        return _ensemble_teacher([load_teacher(p.strip(), device) for p in path.split(",") if p.strip()])
    path = Path(path)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in (".zip", ".ferb")):
        return _bundle_teacher(path, torch.device(device))
    if path.is_file():
        return _checkpoint_teacher(path, torch.device(device))
    raise InputError(f"teacher not found: {path} (expected a fer-edge checkpoint .pt or a bundle folder)")


def _ensemble_teacher(teachers: list[Teacher]) -> Teacher:
    """Several teachers as one: the mean of their logits (a distillation target that is better
    calibrated and more accurate than any one member's)."""
    if not teachers:
        raise InputError("distill_teacher lists no teacher")

    @torch.no_grad()
    def teacher(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(x).float() for t in teachers]).mean(0)

    teacher.source = ",".join(getattr(t, "source", "?") for t in teachers)  # type: ignore[attr-defined]
    return teacher


def _check_batch(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 1:
        raise InputError(f"a teacher takes a uint8 batch (N, 1, H, W), got {x.dtype} {tuple(x.shape)}")


def _checkpoint_teacher(path: Path, device: torch.device) -> Teacher:
    from .checkpoint import input_spec, load_checkpoint
    from .preprocess import to_model_input

    try:
        model, meta = load_checkpoint(path)
    except FerEdgeError as e:
        raise InputError(f"teacher: {e}") from e
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    spec = input_spec(meta)

    @torch.no_grad()
    def teacher(x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        x = x.to(device)
        if tuple(x.shape[-2:]) != tuple(spec.size):  # a student at another size: resize the faces first
            x = F.interpolate(x.float(), size=spec.size, mode="bilinear", align_corners=False,
                              antialias=True).round().clamp(0, 255).to(torch.uint8)
        z = to_model_input(x, spec)  # the checkpoint's own median filter and normalisation
        if device.type != "cuda":
            return model(z)
        # On a GPU the teacher's forward costs as much as the student's step: bf16 halves it, and
        # soft targets at T >= 1 do not need float32 logits.
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(z.contiguous(memory_format=torch.channels_last)).float()

    teacher.source = str(path)  # type: ignore[attr-defined]
    return teacher


def _bundle_teacher(path: Path, device: torch.device) -> Teacher:
    import numpy as np

    from ..bundle import Bundle
    from ..preprocess import preprocess
    from ..runtimes import select_backend

    try:
        bundle = Bundle.open(path)
        backend = select_backend(bundle, "onnxruntime", precision="fp32", device="cpu", strict=True).backend
    except FerEdgeError as e:
        raise InputError(f"teacher bundle {path}: {e}") from e
    spec = bundle.manifest.input
    logits_name = bundle.manifest.model["outputs"]["logits"]

    @torch.no_grad()
    def teacher(x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        batch = preprocess(np.ascontiguousarray(x[:, 0].cpu().numpy()), spec)
        return torch.from_numpy(backend.run(batch)[logits_name]).to(device)

    teacher.source = str(path)  # type: ignore[attr-defined]
    return teacher
