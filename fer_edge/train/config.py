"""Training hyperparameters in one dataclass; recipes are JSON files of overrides."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..tta import TTA_MODES
from .augment import AugmentConfig

RECIPES_DIR = Path(__file__).parent / "recipes"

# Allowed values of the string options: checked once here, so a typo in a recipe fails at load
# time with the list of choices instead of deep inside an epoch.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "adamw", "adam"),
    "schedule": ("cosine", "plateau", "constant"),
    "monitor": ("val_accuracy", "val_loss"),
    "plateau_metric": ("val_accuracy", "val_loss"),
    "loss": ("ce", "triplet", "ce+triplet", "distill"),
    "class_weights": ("none", "balanced"),
    "triplet_mining": ("random", "semihard", "batch_hard"),
    "triplet_distance": ("euclidean", "cosine", "manhattan"),
    "regime": ("scratch", "transfer", "finetune"),
    "sampler": ("random", "balanced"),
    "tta": TTA_MODES,
    "amp": ("auto", "bf16", "off"),
}
COMPILE_CHOICES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs",
                   "inductor", "aot_eager", "eager")


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "tiny_fer"
    data: str = "../shared/datasets/fer2013"
    out: str = "runs/train"
    epochs: int = 30
    batch_size: int = 128  # global: split evenly over DistributedDataParallel ranks
    # optimisation
    optimizer: str = "sgd"  # sgd | adamw | adam
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | plateau (ReduceLROnPlateau) | constant; all after a linear warmup
    warmup_epochs: float = 1.0
    plateau_metric: str = "val_accuracy"
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    monitor: str = "val_accuracy"  # picks best.pt and drives early stopping
    early_stop_patience: int = 0  # epochs without improvement of `monitor`; 0 = off
    stop_at_val_accuracy: float | None = None  # stop once val accuracy reaches this (a Keras callback in one paper)
    # loss (fer_edge.train.losses.build_criterion)
    loss: str = "ce"  # ce | triplet | ce+triplet | distill
    label_smoothing: float = 0.1
    class_weights: str = "none"  # none | balanced (inverse class frequency)
    triplet_margin: float = 0.2
    triplet_mining: str = "batch_hard"
    triplet_distance: str = "euclidean"
    triplet_weight: float = 1.0
    distill_teacher: str | None = None  # a checkpoint .pt or a bundle
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    # model
    pretrained: str | None = None  # a local torchvision-style state_dict file
    regime: str = "scratch"  # scratch | transfer (only the classifier trains) | finetune (all)
    transfer_epochs: int = 0  # with regime finetune: this many transfer epochs first, then unfreeze
    # data
    size: int = 48
    mean: float = 0.5
    std: float = 0.25
    median_filter: int = 0  # odd kernel size applied to every image before anything else; 0 = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampler: str = "random"  # random (a permutation per epoch) | balanced (equal expected count per class)
    limit_per_class: int | None = None  # quick checks on a slice
    tta: str = "none"  # test-time augmentation for validation: none | flip | ten_crop
    test_tta: str | None = None  # the final test's extra mode (besides plain); None = `tta`
    tta_crop: float = 0.9  # ten_crop: side of each crop as a fraction of `size`
    test_at_end: bool = False  # evaluate best.pt on the test split when training ends (written to test.json)
    # machine
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None
    channels_last: bool = True
    amp: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | off
    compile: str = "off"  # off, a torch.compile mode (default, max-autotune, ...) or backend (inductor, aot_eager)
    time_budget_min: float | None = None  # stop cleanly (checkpoint saved) before this many minutes
    # The cosine schedule runs over the time budget instead of `epochs` (then only a cap): a run
    # that shares a GPU with others, or whose speed is unknown, still anneals fully in its slot.
    # Wall-clock driven, so not bit-reproducible (resume continues from the saved elapsed time).
    schedule_by_time: bool = False
    ema_decay: float = 0.0  # > 0: validate, keep and test an exponential moving average of the weights

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"training option {name}={getattr(self, name)!r} is not one of {list(allowed)}")
        if self.compile not in COMPILE_CHOICES:
            raise InputError(f"training option compile={self.compile!r} is not one of {list(COMPILE_CHOICES)}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "size": self.size,
                    "std": self.std}
        bad = {k: v for k, v in positive.items() if not v > 0}
        if bad:
            raise InputError(f"training options must be positive: {bad}")
        if self.median_filter and (self.median_filter < 3 or self.median_filter % 2 == 0):
            raise InputError(f"median_filter must be 0 (off) or an odd kernel size >= 3, got {self.median_filter}")
        if self.test_tta is not None and self.test_tta not in CHOICES["tta"]:
            raise InputError(f"training option test_tta={self.test_tta!r} is not one of {list(CHOICES['tta'])}")
        if not 0 < self.tta_crop <= 1:
            raise InputError(f"tta_crop is a fraction of the input side in (0, 1], got {self.tta_crop}")
        if self.regime == "scratch" and self.pretrained:
            raise InputError("regime 'scratch' trains from random weights; drop `pretrained` or use regime "
                             "'transfer' or 'finetune'")
        if self.transfer_epochs and self.regime != "finetune":
            raise InputError("transfer_epochs (frozen epochs before unfreezing) needs regime 'finetune'")
        if self.loss == "distill" and not self.distill_teacher:
            raise InputError("loss 'distill' needs distill_teacher (a checkpoint .pt or a bundle)")
        if self.schedule_by_time and (self.time_budget_min is None or self.schedule != "cosine"):
            raise InputError("schedule_by_time stretches the cosine schedule over time_budget_min: it needs "
                             "schedule 'cosine' and a time_budget_min")
        if "triplet" in self.loss and (self.augment.mixup_alpha or self.augment.cutmix_alpha):
            raise InputError(f"loss {self.loss!r} needs one class per image: augment.mixup_alpha and "
                             "augment.cutmix_alpha must be 0 with a triplet loss")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise InputError(f"time_budget_min must be positive minutes, got {self.time_budget_min}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown training options {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig.from_dict(d["augment"])
        return cls(**d)

    def override(self, **changes: Any) -> "TrainConfig":
        changes = {k: v for k, v in changes.items() if v is not None}
        if isinstance(changes.get("augment"), dict):
            changes["augment"] = {**asdict(self.augment), **changes["augment"]}
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @property
    def input_spec(self) -> dict[str, Any]:
        """The checkpoint's `input` dict: what a runtime must do to an image before the network."""
        spec: dict[str, Any] = {"size": [self.size, self.size], "scale": 1 / 255, "mean": [self.mean],
                                "std": [self.std]}
        if self.median_filter:
            spec["median"] = self.median_filter
        return spec


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings (values in JSON, else plain strings; `augment.hflip=0` for nested
    fields) -> a dict for TrainConfig.override."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if "." in key:
            outer, inner = key.split(".", 1)
            out.setdefault(outer, {})[inner] = value
        else:
            out[key] = value
    return out


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def recipe_description(name: str) -> str:
    return json.loads((RECIPES_DIR / f"{name}.json").read_text()).get("description", "")


def load_recipe(name_or_path: str) -> TrainConfig:
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise InputError(f"recipe {name_or_path!r} not found; known recipes: {list_recipes()}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"recipe {path} is not valid JSON: {e}") from e
    d.pop("description", None)
    return TrainConfig.from_dict(d)
