"""Backbones for 1-channel face crops, in a registry by name.

Every network is a `FerNet`: `features` (the conv trunk) -> `pool` (global average pooling; its
flattened output is the embedding) -> `classifier`. Pooling makes each one run at 48x48 or any
other size down to its `min_size`. Parameters are for 1 input channel and 7 classes; MMAC are the
multiply-accumulates of the conv and linear layers for one 48x48 crop (counted with forward hooks).

| name | params | MMAC | embedding | from |
|---|---|---|---|---|
| `tiny_fer` | 455,695 | 40 | 256 | the first (CPU-trained) edge default (do not change its keys: bundles depend on them) |
| `nano_fer` | 132,471 | 9 | 256 | the fastest edge net, shipped as `nano` (plain 3x3 convs: see `nano_fer`) |
| `nano_fer_d` | 317,175 | 20 | 256 | `nano_fer` + a 3x3 conv at 12x12 and 6x6; shipped as `tiny`, the default |
| `nano_fer_m` | 295,855 | 21 | 384 | `nano_fer` at 1.5x the widths |
| `nano_fer_l` | 524,007 | 37 | 512 | `nano_fer` at 2x the widths |
| `nano_fer_md` | 711,151 | 45 | 384 | `nano_fer_m`, deep |
| `mobile_fer` | 775,431 | 82 | 160 | sub-1M mobile net (MobileNetV2 blocks) |
| `dao_le_ir` | 771,559 | 210 | 256 | Dao & Le 2021 compact net (paper: 784,263) |
| `vgg_fer` | 5,081,927 | 469 | 512 | the 73.28 % VGG variant (Khaireddin & Chen 2021), as surveyed by Dao & Le |
| `vgg16` | 14,887,111 | 702 | 512 | torchvision `vgg16_bn` trunk (Jahangir 2024; median-filter VGG16 paper head) |
| `vgg19` | 20,037,831 | 893 | 512 | torchvision `vgg19_bn` trunk + one linear layer (Liman & Kusuma 2024) |
| `resnet18` | 11,173,831 | 1,253 | 512 | torchvision `resnet18` trunk, 48x48 stem (see `_resnet`) |
| `resnet50` | 23,516,103 | 2,923 | 2048 | torchvision `resnet50` trunk, 48x48 stem (Jahangir 2024) |

`create_model(name, pretrained=path)` loads a local torchvision-style ImageNet `state_dict`
(see `pretrained.py`); `set_trainable(model, regime)` sets up the papers' scratch / transfer /
fine-tune regimes.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from ..errors import InputError

MODELS: dict[str, Callable[..., "FerNet"]] = {}


def register_model(fn: Callable[..., "FerNet"]) -> Callable[..., "FerNet"]:
    MODELS[fn.__name__] = fn
    return fn


def create_model(name: str, num_classes: int = 7, *, in_channels: int = 1, pretrained: str | os.PathLike | None = None,
                 **options) -> "FerNet":
    """Build architecture `name`. `pretrained`: a local state_dict file (torchvision ImageNet
    layout, or a fer-edge checkpoint) loaded into the trunk; what was loaded or skipped is in
    `model.pretrained_report` and logged. `options` (dropout, ...) go to the builder; a checkpoint
    is rebuilt with the defaults, so a different architecture needs a registered name."""
    if name not in MODELS:
        raise InputError(f"unknown architecture {name!r}; known: {sorted(MODELS)}")
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not (isinstance(in_channels, int) and in_channels >= 1):
        raise InputError(f"in_channels must be a positive integer, got {in_channels!r}")
    try:
        model = MODELS[name](num_classes=num_classes, in_channels=in_channels, **options)
    except TypeError as e:
        raise InputError(f"bad options for architecture {name!r}: {e}") from e
    model.arch = name
    if pretrained is not None:
        from .pretrained import load_pretrained

        model.pretrained_report = load_pretrained(model, pretrained)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class FerNet(nn.Module):
    """features -> global average pool -> classifier; the pooled vector is the embedding."""

    arch = "fernet"
    # Set by set_trainable(model, "transfer"): the trunk stays in eval mode (see `train`).
    frozen_features = False
    pretrained_report: dict | None = None

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int, hidden: tuple[int, ...] = (),
                 dropout: float = 0.0, min_size: int = 8):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = feature_dim
        self.min_size = min_size  # smallest input side the trunk's down-sampling leaves >= 1 pixel of
        layers: list[nn.Module] = []
        width = feature_dim
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        self.classifier = nn.Sequential(*layers)

    def train(self, mode: bool = True) -> "FerNet":
        # A frozen trunk's BatchNorm must keep its (pretrained) running statistics: the loop calls
        # model.train() every epoch, so the trunk is put back into eval mode here, every time.
        super().train(mode)
        if self.frozen_features:
            self.features.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # Not while exporting: the check would become a guard on the graph's dynamic sizes.
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and min(x.shape[-2:]) < self.min_size:
            raise InputError(f"{self.arch} needs inputs of at least {self.min_size}x{self.min_size} pixels, "
                             f"got {tuple(x.shape[-2:])}")
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


# --------------------------------------------------------------------------- training regimes

def _all_trainable(model: FerNet) -> None:
    model.frozen_features = False
    for p in model.parameters():
        p.requires_grad_(True)
    model.train(model.training)


def _frozen_trunk(model: FerNet) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.classifier.parameters():
        p.requires_grad_(True)
    model.frozen_features = True
    model.train(model.training)


# scratch: random init, all trainable. transfer: pretrained trunk frozen (no gradients, BatchNorm
# statistics fixed), only the new classifier learns. finetune: everything learns again, usually
# after a transfer stage and with a small learning rate (the papers' "then unfreeze").
REGIMES: dict[str, Callable[[FerNet], None]] = {
    "scratch": _all_trainable,
    "transfer": _frozen_trunk,
    "finetune": _all_trainable,
}


def set_trainable(model: FerNet, regime: str) -> FerNet:
    if regime not in REGIMES:
        raise InputError(f"regime must be one of {sorted(REGIMES)}, got {regime!r}")
    if not isinstance(model, FerNet):
        raise InputError(f"set_trainable needs a FerNet (features, pool, classifier), got {type(model).__name__}")
    REGIMES[regime](model)
    return model


# --------------------------------------------------------------------------- building blocks

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


def _init_like_torchvision(model: FerNet) -> FerNet:
    """He init for convolutions, unit BatchNorm, small linear weights: torchvision's VGG/ResNet init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


# --------------------------------------------------------------------------- compact nets

@register_model
def tiny_fer(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.1) -> FerNet:
    """The edge default (455,695 params, 40 MMAC at 48x48): a plain-convolution stem that halves
    the resolution early, then inverted-residual blocks at 12x12 and 6x6, where depthwise layers
    are cheap both to run on one CPU core and to train on a CPU."""
    features = nn.Sequential(
        conv_bn(in_channels, 24, 3),
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
    return FerNet(features, 256, num_classes, dropout=dropout, min_size=8)


@register_model
def nano_fer(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.1) -> FerNet:
    """The latency-first edge net for the <= 0.3 ms-per-crop INT8 target (issue 6): 132,471
    params, ~9 MMAC at 48x48. A strided stem straight to 24x24, then one plain 3x3 conv per
    resolution (24, 12, 6) doubling the width, and a 1x1 to a 256-d embedding.

    Plain convolutions, not inverted residuals: at batch 1 on one core, per-layer overhead, not
    arithmetic, sets the latency of nets this small, and an inverted-residual variant with a
    third of tiny_fer's MACs still took 0.45 ms in INT8 against 0.25 ms for this one
    (benchmarks/arch_latency.py, docs/benchmarks.md). Meant to be trained by distillation from
    `base` (recipe `tiny`)."""
    return _nano(in_channels, num_classes, dropout, (16, 32, 64, 128), 256)


def _nano(in_channels: int, num_classes: int, dropout: float, widths: tuple[int, int, int, int], embed: int,
          deep: bool = False) -> FerNet:
    """The nano family's layout (module indices are the checkpoint keys of `nano_fer`: keep them).
    `deep` adds one more 3x3 conv at 12x12 and at 6x6, after the layers `nano_fer` has."""
    a, b, c, d = widths
    layers = [
        conv_bn(in_channels, a, 3, stride=2),  # 24x24
        conv_bn(a, b, 3),
        nn.MaxPool2d(2),  # 12x12
        conv_bn(b, c, 3),
        nn.MaxPool2d(2),  # 6x6
        conv_bn(c, d, 3),
        conv_bn(d, embed, 1),
    ]
    if deep:
        layers.insert(4, conv_bn(c, c, 3))  # 12x12
        layers.insert(7, conv_bn(d, d, 3))  # 6x6
    return FerNet(nn.Sequential(*layers), embed, num_classes, dropout=dropout, min_size=8)


# Wider and deeper points of the same family: the accuracy / latency trade-off of the edge model
# (docs/models.md). Each is a registered name, so its checkpoints rebuild without options.
@register_model
def nano_fer_m(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.1) -> FerNet:
    """1.5x the widths of nano_fer (24-48-96-192, 384-d embedding)."""
    return _nano(in_channels, num_classes, dropout, (24, 48, 96, 192), 384)


@register_model
def nano_fer_l(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.1) -> FerNet:
    """2x the widths of nano_fer (32-64-128-256, 512-d embedding)."""
    return _nano(in_channels, num_classes, dropout, (32, 64, 128, 256), 512)


@register_model
def nano_fer_d(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.1) -> FerNet:
    """nano_fer's widths with one more 3x3 conv at 12x12 and at 6x6."""
    return _nano(in_channels, num_classes, dropout, (16, 32, 64, 128), 256, deep=True)


@register_model
def nano_fer_md(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.1) -> FerNet:
    """nano_fer_m's widths, deep."""
    return _nano(in_channels, num_classes, dropout, (24, 48, 96, 192), 384, deep=True)


@register_model
def mobile_fer(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.1) -> FerNet:
    """Sub-1M mobile net (775,431 params, 82 MMAC at 48x48): 5x5 + strided 3x3 stem, four
    MobileNetV2 inverted-residual blocks (expansion 6) down to 6x6, 160-d embedding."""
    features = nn.Sequential(
        conv_bn(in_channels, 32, 5),
        conv_bn(32, 64, 3, stride=2),
        InvertedResidual(64, 96, stride=2),
        InvertedResidual(96, 128),
        InvertedResidual(128, 160, stride=2),
        InvertedResidual(160, 160),
    )
    return FerNet(features, 160, num_classes, dropout=dropout, min_size=8)


@register_model
def dao_le_ir(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.0) -> FerNet:
    """The compact net of Dao & Le (2021), 771,559 params (the paper's Table 1: 784,263).

    The paper's text (its layer figure is lost): two plain conv+BN+ReLU layers, the second 5x5,
    every other kernel 3x3; 2x2 max-pooling; four MobileNetV2 inverted-residual blocks whose
    intermediate (expanded) widths are 256, 256, 512, 512, each with a skip from input to output
    (so equal input and output widths); then flatten + fully connected layers; no dropout needed.

    Built here as: 3x3 conv 32 -> 5x5 conv 64 -> pool (24x24) -> IR(64, hidden 256) x 2 -> pool
    (12x12) -> 1x1 widening to 128 (the blocks keep their width, so the width changes between
    them) -> IR(128, hidden 512) x 2 -> pool (6x6) -> 3x3 conv 256 -> global average pool -> FC 256
    -> FC 7. The last 3x3 conv + pooling stands in for the paper's flatten + FC over a small map:
    about the same weights (295k), but it runs at any input size.
    """
    features = nn.Sequential(
        conv_bn(in_channels, 32, 3),
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
    return FerNet(features, 256, num_classes, hidden=(256,), dropout=dropout, min_size=8)


# --------------------------------------------------------------------------- VGG

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg_features(cfg: list, in_channels: int = 1, conv_bias: bool = True) -> nn.Sequential:
    """torchvision's `make_layers(cfg, batch_norm=True)`: a flat Sequential conv, BN, ReLU, ...,
    MaxPool, so the keys are torchvision's (`features.0.weight`, `features.1.running_mean`, ...)."""
    layers: list[nn.Module] = []
    cin = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


@register_model
def vgg_fer(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.2) -> FerNet:
    """The tuned VGG variant of Khaireddin & Chen (73.28 %, surveyed by Dao & Le), 5,081,927 params:
    4 stages x 2 (conv3x3 + BN + ReLU) + max-pool, widths 64-128-256-512, then a 3-layer classifier.
    Differences, on purpose: BN before ReLU (the paper puts ReLU first; this order folds into the
    convolution at export), and global average pooling + FC 512 -> 256 -> 7 instead of flattening
    the last map into two 4096-wide layers (which ties the net to one input size and adds ~20M
    parameters)."""
    features = vgg_features([64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"], in_channels, conv_bias=False)
    return _init_like_torchvision(FerNet(features, 512, num_classes, hidden=(512, 256), dropout=dropout, min_size=16))


@register_model
def vgg16(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.5) -> FerNet:
    """VGG16 with BatchNorm (torchvision `vgg16_bn` trunk and keys), 14,887,111 params: 13 convs in 5
    stages, global average pooling (1x1 after five pools at 48x48), then the median-filter VGG16
    paper's new head FC 256 -> FC 128 -> 7 with dropout 0.5. Loads `vgg16_bn` ImageNet weights."""
    return _init_like_torchvision(FerNet(vgg_features(VGG16_CFG, in_channels), 512, num_classes, hidden=(256, 128),
                                         dropout=dropout, min_size=32))


@register_model
def vgg19(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.0) -> FerNet:
    """VGG19 with BatchNorm (torchvision `vgg19_bn` trunk and keys), 20,037,831 params: 16 convs in 5
    stages, global average pooling, one linear layer (Liman & Kusuma 2024, Table 2: "1 Linear Layer",
    embeddings hooked at the pooling layer; they used the plain vgg19, 20,027,975 params with a
    512 -> 7 layer, i.e. the same net without BatchNorm). Loads `vgg19_bn` ImageNet weights."""
    return _init_like_torchvision(FerNet(vgg_features(VGG19_CFG, in_channels), 512, num_classes, dropout=dropout,
                                         min_size=32))


# --------------------------------------------------------------------------- ResNet

class BasicBlock(nn.Module):
    """torchvision's ResNet-18/34 block, with its attribute names."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block (v1.5: the stride sits on the 3x3), with its attribute names."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


def _resnet_stage(block: type, cin: int, width: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    downsample = None
    cout = width * block.expansion
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    layers = [block(cin, width, stride, downsample)] + [block(cout, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers), cout


def _resnet(block: type, depths: tuple[int, int, int, int], num_classes: int, in_channels: int,
            dropout: float) -> FerNet:
    """torchvision's ResNet under `features.` (`features.conv1.weight`, `features.layer1.0.bn1.bias`,
    ...), with the stem adapted to 48x48 crops: the 7x7 convolution keeps its kernel (so ImageNet
    `conv1` weights still load, which matters most when the trunk is frozen) but runs at stride 1,
    and the max-pool is dropped. ImageNet's 224 px are down-sampled 32x to a 7x7 map; a 48 px face
    down-sampled 8x ends at 6x6, the closest geometry (32x would leave 2x2 and discard most of the
    little detail a 48 px face has). The cost: layer1 runs at 48x48, so resnet18 is 1.25 GMAC/image."""
    stem = [("conv1", nn.Conv2d(in_channels, 64, 7, 1, 3, bias=False)), ("bn1", nn.BatchNorm2d(64)),
            ("relu", nn.ReLU(inplace=True))]
    stages, cin = [], 64
    for i, (width, depth) in enumerate(zip((64, 128, 256, 512), depths)):
        stage, cin = _resnet_stage(block, cin, width, depth, 1 if i == 0 else 2)
        stages.append((f"layer{i + 1}", stage))
    features = nn.Sequential(OrderedDict(stem + stages))
    return _init_like_torchvision(FerNet(features, cin, num_classes, dropout=dropout, min_size=8))


@register_model
def resnet18(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.0) -> FerNet:
    """ResNet-18 (torchvision keys under `features.`), 11,173,831 params, 512-d embedding, one linear
    layer as torchvision's `fc`. Loads torchvision `resnet18` ImageNet weights."""
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, dropout)


@register_model
def resnet50(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.0) -> FerNet:
    """ResNet-50 (torchvision keys under `features.`), 23,516,103 params, 2048-d embedding, one
    linear layer as torchvision's `fc` (Jahangir 2024 put a 128-64 MLP there; heads on the embedding
    cover that). Loads torchvision `resnet50` ImageNet weights."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, dropout)
