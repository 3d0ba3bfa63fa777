"""Training hyperparameters in one dataclass; recipes are JSON files of overrides."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from .augment import AugmentConfig

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "tiny_fer"
    data: str = "../shared/datasets/fer2013"
    out: str = "runs/train"
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | plateau | constant
    warmup_epochs: float = 1.0
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    early_stop_patience: int = 0  # epochs without val improvement; 0 = off
    label_smoothing: float = 0.1
    size: int = 48
    mean: float = 0.5
    std: float = 0.25
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    limit_per_class: int | None = None  # quick checks on a slice
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None
    channels_last: bool = True

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
            aug = dict(d["augment"])
            if "erase_area" in aug:
                aug["erase_area"] = tuple(aug["erase_area"])
            d["augment"] = AugmentConfig(**aug)
        return cls(**d)

    def override(self, **changes: Any) -> "TrainConfig":
        changes = {k: v for k, v in changes.items() if v is not None}
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str) -> TrainConfig:
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise InputError(f"recipe {name_or_path!r} not found; known recipes: {list_recipes()}")
    d = json.loads(path.read_text())
    d.pop("description", None)
    return TrainConfig.from_dict(d)
