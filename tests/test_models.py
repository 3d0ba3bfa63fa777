"""Architectures by name: they build, train a few steps, have the documented sizes; pretrained
torchvision-style weights load into them; the transfer regime really freezes the trunk."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fer_edge.errors import InputError  # noqa: E402
from fer_edge.train.models import MODELS, FerNet, count_params, create_model, set_trainable  # noqa: E402
from fer_edge.train.pretrained import load_pretrained  # noqa: E402

from conftest import synthetic_faceset  # noqa: E402

# The counts in models.py's docstrings (1 input channel, 7 classes).
PARAMS = {
    "tiny_fer": 455_695,
    "nano_fer": 132_471,
    "nano_fer_d": 317_175,
    "nano_fer_m": 295_855,
    "nano_fer_l": 524_007,
    "nano_fer_md": 711_151,
    "mobile_fer": 775_431,
    "dao_le_ir": 771_559,
    "vgg_fer": 5_081_927,
    "vgg16": 14_887_111,
    "vgg19": 20_037_831,
    "resnet18": 11_173_831,
    "resnet50": 23_516_103,
}
BIG = {"vgg16", "vgg19", "resnet18", "resnet50"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(n: int, size: int = 48, seed: int = 0):
    faces = synthetic_faceset(per_class=2, seed=seed, size=size)
    x = torch.from_numpy(faces.images[:n]).unsqueeze(1).float().div(255).sub(0.5).div(0.25)
    return x, torch.from_numpy(faces.labels[:n])


def test_registry_is_what_the_docstrings_list():
    assert set(MODELS) == set(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_builds_trains_and_has_the_documented_size(name):
    torch.manual_seed(0)
    model = create_model(name, dropout=0.0)  # no dropout: the loss on a fixed batch must then fall
    assert isinstance(model, FerNet) and model.arch == name
    assert count_params(model) == PARAMS[name]

    x, _ = _batch(2)  # 48x48
    captured = []
    model.pool.register_forward_hook(lambda _m, _i, out: captured.append(out.flatten(1)))
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 7)
        assert captured[0].shape == (2, model.feature_dim)
        torch.testing.assert_close(model.forward_features(x), captured[0])

    # Training steps at 32x32 keep the CPU cost of the big nets to about a second.
    n, steps = (2, 1) if name in BIG else (7, 3)
    x, y = _batch(n, size=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = []
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(float(loss.detach()))
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith("features.") for k in changed) and any(k.startswith("classifier.") for k in changed)
    if steps > 1:
        assert losses[-1] < losses[0], losses


def test_dao_le_compact_net_is_within_a_few_percent_of_the_paper():
    assert abs(count_params(create_model("dao_le_ir")) / 784_263 - 1) < 0.03


@pytest.mark.parametrize("name,size", [("tiny_fer", 64), ("mobile_fer", 40), ("dao_le_ir", 96), ("resnet18", 32)])
def test_other_input_sizes(name, size):
    model = create_model(name).eval()
    x, _ = _batch(2, size=size)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        assert model.forward_features(x).shape == (2, model.feature_dim)


def test_too_small_an_input_is_a_clear_error():
    with pytest.raises(InputError, match="at least 32x32"):
        create_model("vgg16").eval()(torch.zeros(1, 1, 16, 16))


def test_in_channels_and_num_classes():
    model = create_model("mobile_fer", num_classes=3, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 3)


@pytest.mark.parametrize("kwargs,match", [({"name": "vgg11"}, "unknown architecture"),
                                          ({"name": "tiny_fer", "num_classes": 1}, "num_classes"),
                                          ({"name": "tiny_fer", "in_channels": 0}, "in_channels"),
                                          ({"name": "tiny_fer", "depth": 3}, "bad options")])
def test_bad_requests(kwargs, match):
    with pytest.raises(InputError, match=match):
        create_model(**kwargs)


def test_tiny_fer_keys_unchanged():
    """The shipped checkpoint's layout: a change here breaks every tiny_fer checkpoint and bundle.
    The digest is of the `key:shape` lines of the layout the packaged model was trained with."""
    import hashlib

    lines = [f"{k}:{tuple(v.shape)}" for k, v in create_model("tiny_fer").state_dict().items()]
    assert len(lines) == 116 and lines[0] == "features.0.0.weight:(24, 1, 3, 3)"
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert digest == "d6278892ceff7ac7043610023909be00cab3c1711f08b29e00b8c8ddd35b6bc3"


@pytest.mark.parametrize("name, n, digest", [
    ("nano_fer", 32, "c6177d857358bad8c75a646aec5452981b5e61825c5e1e11b17e3d4c9be21a9e"),
    ("nano_fer_d", 44, "68eca648463c677ac519237a0eb76a4c8775f132fc1835a36a7273eb67d2be91"),
])
def test_packaged_edge_layouts_unchanged(name, n, digest):
    """`nano` and `tiny` ship these layouts (the H200 checkpoints' `key:shape` lines): the shared
    builder `_nano` must keep their keys."""
    import hashlib

    lines = [f"{k}:{tuple(v.shape)}" for k, v in create_model(name).state_dict().items()]
    assert len(lines) == n and lines[0] == "features.0.0.weight:(16, 1, 3, 3)"
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == digest


# --------------------------------------------------------------------------- torchvision layout

def test_torchvision_key_layout():
    """Key names and counts of torchvision's state_dicts (resnet18: 122 entries, resnet50: 320,
    vgg16_bn trunk: 13 convs + 13 BNs = 91) under `features.`."""
    r18 = create_model("resnet18").state_dict()
    trunk = {k.removeprefix("features."): v.shape for k, v in r18.items() if k.startswith("features.")}
    assert len(trunk) + 2 == 122  # + fc.weight, fc.bias
    assert trunk["conv1.weight"] == (64, 1, 7, 7)
    assert trunk["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert trunk["layer4.1.bn2.running_var"] == (512,)
    r50 = create_model("resnet50").state_dict()
    trunk50 = {k.removeprefix("features."): v.shape for k, v in r50.items() if k.startswith("features.")}
    assert len(trunk50) + 2 == 320
    assert trunk50["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert trunk50["layer3.0.conv2.weight"] == (256, 256, 3, 3)  # v1.5: the stride sits on the 3x3
    vgg = create_model("vgg16").state_dict()
    feats = [k for k in vgg if k.startswith("features.")]
    assert len(feats) == 13 * 2 + 13 * 5
    assert vgg["features.0.weight"].shape == (64, 1, 3, 3) and vgg["features.0.bias"].shape == (64,)
    assert vgg["features.1.running_mean"].shape == (64,) and vgg["features.41.weight"].shape == (512,)


def _torchvision_resnet_file(path, arch="resnet18"):
    """A state_dict laid out like torchvision's ImageNet file: 3-channel conv1, 1000-class fc, no prefix."""
    src = create_model(arch, in_channels=3)
    with torch.no_grad():
        for name, buf in src.named_buffers():  # non-trivial BN statistics, so the check means something
            if "running" in name:
                buf.uniform_(0.5, 1.5)
    sd = {k.removeprefix("features."): v for k, v in src.state_dict().items() if k.startswith("features.")}
    sd["fc.weight"] = torch.randn(1000, src.feature_dim)
    sd["fc.bias"] = torch.zeros(1000)
    torch.save(sd, path)
    return src, sd


def test_resnet_loads_torchvision_weights_with_gray_stem(tmp_path, caplog):
    src, sd = _torchvision_resnet_file(tmp_path / "resnet18.pth")
    with caplog.at_level("INFO", logger="fer_edge.train"):
        model = create_model("resnet18", pretrained=str(tmp_path / "resnet18.pth"))
    report = model.pretrained_report
    assert set(report["skipped"]) == {"fc.weight", "fc.bias"}
    assert report["adapted"] == {"features.conv1.weight": "RGB filters summed to 1 channel"}
    assert "skipped 2 file tensors" in caplog.text and "fc.weight" in caplog.text
    torch.testing.assert_close(model.features.conv1.weight, sd["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(model.state_dict()["features.layer3.1.bn1.running_mean"], sd["layer3.1.bn1.running_mean"])
    # Summing the RGB filters is exact for a gray image given as R = G = B.
    x, _ = _batch(2, size=32)
    src.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), src.forward_features(x.repeat(1, 3, 1, 1)),
                                   rtol=1e-4, atol=1e-5)


def test_vgg16_loads_torchvision_bn_weights_and_skips_the_imagenet_classifier(tmp_path):
    src = create_model("vgg16", in_channels=3)
    sd = {k: v for k, v in src.state_dict().items() if k.startswith("features.")}
    # torchvision's classifier: 25088 -> 4096 -> 4096 -> 1000 (expanded views keep the file small).
    for i, shape in ((0, (4096, 25088)), (3, (4096, 4096)), (6, (1000, 4096))):
        sd[f"classifier.{i}.weight"] = torch.zeros(1).expand(*shape)
        sd[f"classifier.{i}.bias"] = torch.zeros(shape[0])
    path = tmp_path / "vgg16_bn.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)  # wrapped, DataParallel names
    model = create_model("vgg16")
    head_before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    report = load_pretrained(model, path)
    assert sorted(report["skipped"]) == sorted(f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias"))
    assert len(report["loaded"]) == 91
    torch.testing.assert_close(model.features[40].weight, sd["features.40.weight"])
    torch.testing.assert_close(model.features[0].weight, sd["features.0.weight"].sum(1, keepdim=True))
    for k, v in model.classifier.state_dict().items():
        assert torch.equal(v, head_before[k])


def test_a_file_that_matches_nothing_or_only_part_of_the_trunk_is_refused(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="none of its 1 tensors fits resnet18"):
        create_model("resnet18", pretrained=str(tmp_path / "other.pth"))
    # The plain (non-BN) VGG layout puts convolutions where the BN variant has BatchNorm / ReLU.
    plain = {}
    cin, i = 3, 0
    for v in [64, 64, "M", 128]:
        if v == "M":
            i += 1
            continue
        plain[f"features.{i}.weight"], plain[f"features.{i}.bias"] = torch.zeros(v, cin, 3, 3), torch.zeros(v)
        cin, i = v, i + 2
    torch.save(plain, tmp_path / "vgg16_plain.pth")
    with pytest.raises(InputError, match="vgg16_bn"):
        create_model("vgg16", pretrained=str(tmp_path / "vgg16_plain.pth"))
    with pytest.raises(InputError, match="not found"):
        create_model("vgg16", pretrained=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable"):
        create_model("vgg16", pretrained=str(tmp_path / "junk.pth"))


def test_a_fer_edge_checkpoint_initialises_the_same_architecture(tiny_checkpoint):
    model = create_model("tiny_fer", pretrained=str(tiny_checkpoint))
    ckpt = torch.load(tiny_checkpoint, weights_only=True)["model"]
    assert model.pretrained_report["skipped"] == {}
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt[k]), k


# --------------------------------------------------------------------------- regimes

def test_transfer_freezes_the_trunk_and_its_batchnorm_then_finetune_unfreezes(tmp_path):
    torch.manual_seed(0)
    model = create_model("vgg_fer")
    set_trainable(model, "transfer")
    model.train()  # the loop calls this every epoch: the trunk must stay in eval mode
    assert not model.features.training and model.classifier.training
    assert all(not p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    x, y = _batch(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    trunk = {k: v.clone() for k, v in model.features.state_dict().items()}
    head = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in model.features.state_dict().items():  # weights and BN running statistics
        assert torch.equal(v, trunk[k]), k
    assert any(not torch.equal(v, head[k]) for k, v in model.classifier.state_dict().items())

    set_trainable(model, "finetune")
    assert model.features.training and all(p.requires_grad for p in model.parameters())
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(model.features[0].weight, trunk["0.weight"])
    assert not torch.equal(model.features[1].running_mean, trunk["1.running_mean"])


def test_unknown_regime():
    with pytest.raises(InputError, match="regime must be one of"):
        set_trainable(create_model("tiny_fer"), "frozen")
