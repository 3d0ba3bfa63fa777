"""Backbones for 1-channel face crops, in a registry by name.

Every network ends in global average pooling, so it runs at 48x48 or any other size, and
exposes `forward_features(x)` (the pooled embedding) beside `forward(x)` (the logits).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import InputError

MODELS: dict[str, Callable[..., "FerNet"]] = {}


def register_model(fn: Callable[..., "FerNet"]) -> Callable[..., "FerNet"]:
    MODELS[fn.__name__] = fn
    return fn


def create_model(name: str, num_classes: int = 7, **kwargs) -> "FerNet":
    if name not in MODELS:
        raise InputError(f"unknown architecture {name!r}; known: {sorted(MODELS)}")
    model = MODELS[name](num_classes=num_classes, **kwargs)
    model.arch = name
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class FerNet(nn.Module):
    """features -> global average pool -> classifier; the pooled vector is the embedding."""

    arch = "fernet"

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int, hidden: tuple[int, ...] = (),
                 dropout: float = 0.0):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = feature_dim
        layers: list[nn.Module] = []
        width = feature_dim
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        self.classifier = nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


class WithEmbedding(nn.Module):
    """Export wrapper: one forward that returns (logits, embedding)."""

    def __init__(self, net: FerNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        emb = self.net.forward_features(x)
        return self.net.classifier(emb), emb


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 6, hidden: int | None = None):
        super().__init__()
        hidden = hidden or cin * expand
        self.use_skip = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn(cin, hidden, 1, act=nn.ReLU6),
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, 1, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_skip else y


@register_model
def mobile_fer(num_classes: int = 7, dropout: float = 0.1) -> FerNet:
    """Sub-1M mobile net (0.78M params): 5x5 + strided 3x3 stem, four inverted-residual blocks."""
    features = nn.Sequential(
        conv_bn(1, 32, 5),
        conv_bn(32, 64, 3, stride=2),
        InvertedResidual(64, 96, stride=2),
        InvertedResidual(96, 128),
        InvertedResidual(128, 160, stride=2),
        InvertedResidual(160, 160),
    )
    return FerNet(features, 160, num_classes, dropout=dropout)


@register_model
def tiny_fer(num_classes: int = 7, dropout: float = 0.1) -> FerNet:
    """The edge default (~0.5M params, ~27 MMAC at 48x48): a plain-convolution stem that halves
    the resolution early, then inverted-residual blocks at 12x12 and 6x6, where depthwise layers
    are cheap both to run on one CPU core and to train on a CPU."""
    features = nn.Sequential(
        conv_bn(1, 24, 3),
        conv_bn(24, 48, 3, stride=2),  # 24x24
        conv_bn(48, 48, 3),
        nn.MaxPool2d(2),  # 12x12
        InvertedResidual(48, 64, expand=4),
        InvertedResidual(64, 64, expand=4),
        nn.MaxPool2d(2),  # 6x6
        InvertedResidual(64, 128, expand=4),
        InvertedResidual(128, 128, expand=4),
        InvertedResidual(128, 128, expand=4),
        conv_bn(128, 256, 1),
    )
    return FerNet(features, 256, num_classes, dropout=dropout)


@register_model
def dao_le_ir(num_classes: int = 7, dropout: float = 0.0) -> FerNet:
    """The compact net of Dao & Le (2021): two plain convolutions (the second 5x5), then
    inverted-residual blocks whose expanded widths are 256, 256, 512, 512, max-pooling between."""
    features = nn.Sequential(
        conv_bn(1, 32, 3),
        conv_bn(32, 64, 5),
        nn.MaxPool2d(2),  # 24x24
        InvertedResidual(64, 64, hidden=256),
        InvertedResidual(64, 64, hidden=256),
        nn.MaxPool2d(2),  # 12x12
        conv_bn(64, 128, 1),
        InvertedResidual(128, 128, hidden=512),
        InvertedResidual(128, 128, hidden=512),
        nn.MaxPool2d(2),  # 6x6
        conv_bn(128, 256, 3),
    )
    return FerNet(features, 256, num_classes, hidden=(256,), dropout=dropout)


def _vgg_features(cfg: list, batch_norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 1
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(conv_bn(cin, v, 3) if batch_norm else nn.Sequential(nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(True)))
            cin = v
    return nn.Sequential(*layers)


@register_model
def vgg_fer(num_classes: int = 7, dropout: float = 0.2) -> FerNet:
    """The tuned VGG variant (73.28 % paper): 4 stages x 2 conv+BN+ReLU (64-128-256-512), 3-layer classifier."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"]
    return FerNet(_vgg_features(cfg), 512, num_classes, hidden=(512, 256), dropout=dropout)


@register_model
def vgg16(num_classes: int = 7, dropout: float = 0.5) -> FerNet:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    return FerNet(_vgg_features(cfg), 512, num_classes, hidden=(512,), dropout=dropout)


@register_model
def vgg19(num_classes: int = 7, dropout: float = 0.5) -> FerNet:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    return FerNet(_vgg_features(cfg), 512, num_classes, hidden=(512,), dropout=dropout)
