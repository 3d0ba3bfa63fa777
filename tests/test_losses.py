"""Losses against values worked out by hand, gradient flow, and distillation from checkpoint and bundle teachers."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from fer_edge.errors import InputError  # noqa: E402
from fer_edge.train.losses import (  # noqa: E402
    TripletConfig,
    TripletLoss,
    build_criterion,
    class_weights_from_counts,
    load_teacher,
)
from fer_edge.train.models import create_model  # noqa: E402

from conftest import synthetic_faceset  # noqa: E402

sqrt = math.sqrt


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _triplet(embedding, targets, **cfg):
    loss, active = TripletLoss(TripletConfig(**cfg))(torch.tensor(embedding), torch.tensor(targets))
    return float(loss), active


# Four unit vectors, two classes. Dot products: e0.e1 = .6, e0.e2 = .8, e0.e3 = -1, e1.e2 = 0,
# e1.e3 = -.6, e2.e3 = -.8. Euclidean distance = sqrt(2 - 2 dot), cosine distance = 1 - dot.
SQUARE = [[1.0, 0.0], [0.6, 0.8], [0.8, -0.6], [-1.0, 0.0]]
SQUARE_Y = [0, 0, 1, 1]


def test_batch_hard_euclidean_by_hand():
    # Per anchor: farthest positive - nearest negative + 0.2, clipped at 0.
    # a0: d01 - min(d02, d03) = sqrt(.8) - sqrt(.4);  a1: sqrt(.8) - min(sqrt(2), sqrt(3.2)) < -0.2 -> 0
    # a2: d23 - min(d20, d21) = sqrt(3.6) - sqrt(.4); a3: sqrt(3.6) - min(2, sqrt(3.2))
    expected = ((sqrt(.8) - sqrt(.4) + .2) + 0 + (sqrt(3.6) - sqrt(.4) + .2) + (sqrt(3.6) - sqrt(3.2) + .2)) / 4
    loss, active = _triplet(SQUARE, SQUARE_Y, margin=0.2, mining="batch_hard", distance="euclidean")
    assert loss == pytest.approx(expected, abs=1e-6) and active == 3


def test_batch_hard_cosine_by_hand():
    # Cosine distances: d01 .4, d02 .2, d03 2, d12 1, d13 1.6, d23 1.8.
    # a0: .4 - .2 + .2 = .4; a1: .4 - 1 + .2 < 0; a2: 1.8 - .2 + .2 = 1.8; a3: 1.8 - 1.6 + .2 = .4
    loss, active = _triplet(SQUARE, SQUARE_Y, margin=0.2, mining="batch_hard", distance="cosine")
    assert loss == pytest.approx((0.4 + 0 + 1.8 + 0.4) / 4, abs=1e-6) and active == 3


def test_batch_hard_manhattan_by_hand():
    # L1 distances: d01 .4+.8 = 1.2, d02 .2+.6 = .8, d03 2, d12 .2+1.4 = 1.6, d13 1.6+.8 = 2.4, d23 1.8+.6 = 2.4.
    # a0: 1.2 - .8 + .2 = .6; a1: 1.2 - 1.6 + .2 < 0; a2: 2.4 - .8 + .2 = 1.8; a3: 2.4 - 2 + .2 = .6
    loss, active = _triplet(SQUARE, SQUARE_Y, margin=0.2, mining="batch_hard", distance="manhattan")
    assert loss == pytest.approx((0.6 + 0 + 1.8 + 0.6) / 4, abs=1e-6) and active == 3


# Anchor A and positive P (class 0) and four negatives, each of its own class (so only the pairs
# (A, P) and (P, A) exist). Cosine distances:       N1 (.8,-.6)  N2 (0,1)  N3 (-1,0)  N4 (.28,-.96)
#   from A (1, 0), d(A, P) = .4:                        .2          1          2          .72
#   from P (.6, .8), d(P, A) = .4:                      1           .2         1.6        1.6
PAIR = [[1.0, 0.0], [0.6, 0.8], [0.8, -0.6], [0.0, 1.0], [-1.0, 0.0], [0.28, -0.96]]
PAIR_Y = [0, 0, 1, 2, 3, 4]


def test_semihard_picks_the_nearest_negative_beyond_the_positive_within_the_margin():
    # margin .5, window (.4, .9): A's semi-hard negative is N4 (.72) -> .4 - .72 + .5 = .18;
    # P has none in the window -> its hardest negative N2 (.2) -> .4 - .2 + .5 = .7.
    loss, active = _triplet(PAIR, PAIR_Y, margin=0.5, mining="semihard", distance="cosine")
    assert loss == pytest.approx((0.18 + 0.7) / 2, abs=1e-6) and active == 2
    # Batch-hard takes the hardest for both: A -> N1 (.2), P -> N2 (.2): .7 each.
    loss, _ = _triplet(PAIR, PAIR_Y, margin=0.5, mining="batch_hard", distance="cosine")
    assert loss == pytest.approx(0.7, abs=1e-6)
    # margin .8, window (.4, 1.2): A -> N4 (.72): .48; P -> N1 (1.0): .2.
    loss, _ = _triplet(PAIR, PAIR_Y, margin=0.8, mining="semihard", distance="cosine")
    assert loss == pytest.approx((0.48 + 0.2) / 2, abs=1e-6)


def test_random_mining_by_hand_and_its_draws():
    # One negative only: random mining is then deterministic. Euclidean, margin .2:
    # (A, P): sqrt(.8) - sqrt(.4) + .2; (P, A): sqrt(.8) - sqrt(2) + .2 < 0.
    loss, active = _triplet(SQUARE[:3], [0, 0, 1], margin=0.2, mining="random", distance="euclidean")
    assert loss == pytest.approx((sqrt(.8) - sqrt(.4) + .2) / 2, abs=1e-6) and active == 1
    # With the PAIR batch, each draw picks one negative per pair: the loss is one of the 16
    # combinations, and over many draws every negative gets picked.
    per_a = {n: max(0.0, 0.4 - d + 0.5) for n, d in zip("1234", (0.2, 1.0, 2.0, 0.72))}
    per_p = {n: max(0.0, 0.4 - d + 0.5) for n, d in zip("1234", (1.0, 0.2, 1.6, 1.6))}
    possible = {round((a + p) / 2, 5) for a in per_a.values() for p in per_p.values()}
    torch.manual_seed(0)
    seen = {round(_triplet(PAIR, PAIR_Y, margin=0.5, mining="random", distance="cosine")[0], 5) for _ in range(200)}
    assert seen <= possible and len(seen) >= 4


def test_embeddings_are_l2_normalised_first():
    scaled = [[3 * v for v in row] for row in SQUARE]
    for mining in ("batch_hard", "semihard"):
        for distance in ("euclidean", "cosine", "manhattan"):
            assert _triplet(scaled, SQUARE_Y, mining=mining, distance=distance) == pytest.approx(
                _triplet(SQUARE, SQUARE_Y, mining=mining, distance=distance))


def test_a_batch_with_one_class_gives_zero_and_keeps_the_graph():
    e = torch.randn(4, 8, requires_grad=True)
    loss, active = TripletLoss()(e, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0 and active == 0 and e.grad is not None


@pytest.mark.parametrize("mining", ["random", "semihard", "batch_hard"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine", "manhattan"])
def test_triplet_gradients_flow_and_pull_the_classes_apart(mining, distance):
    torch.manual_seed(0)
    targets = torch.arange(4).repeat_interleave(4)
    e = torch.randn(16, 8, requires_grad=True)
    crit = TripletLoss(TripletConfig(margin=0.5, mining=mining, distance=distance))
    opt = torch.optim.SGD([e], lr=0.5)
    hardest = TripletLoss(TripletConfig(margin=0.5, mining="batch_hard", distance=distance))
    first, _ = hardest(e, targets)
    for _ in range(30):
        loss, _ = crit(e, targets)
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0 or float(loss.detach()) == 0
        opt.step()
    last, _ = hardest(e, targets)
    assert float(last.detach()) < float(first.detach())


def test_triplet_config_is_checked():
    with pytest.raises(InputError, match="mining"):
        TripletConfig(mining="hardest")
    with pytest.raises(InputError, match="distance"):
        TripletConfig(distance="chebyshev")
    with pytest.raises(InputError, match="margin"):
        TripletConfig(margin=-1)


# --------------------------------------------------------------------------- cross-entropy

def test_class_weights_from_counts():
    # 1/[1, 2, 4] = [1, .5, .25], mean 7/12 -> [12/7, 6/7, 3/7]
    torch.testing.assert_close(class_weights_from_counts([1, 2, 4]), torch.tensor([12 / 7, 6 / 7, 3 / 7]))
    with pytest.raises(InputError, match="positive"):
        class_weights_from_counts([10, 0, 3])


def test_cross_entropy_with_weights_and_smoothing_by_hand():
    logits = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]])  # softmax: [.75, .25] and [.5, .5]
    y = torch.tensor([0, 1])
    crit = build_criterion("ce", num_classes=2, class_weights=torch.tensor([1.0, 3.0]))
    loss, stats = crit(logits, None, y)
    # Weighted mean of the two NLLs: (1 * -ln .75 + 3 * ln 2) / (1 + 3)
    assert float(loss) == pytest.approx((-math.log(0.75) + 3 * math.log(2)) / 4, abs=1e-6)
    assert stats == {"ce": pytest.approx(float(loss))} and not crit.needs_embedding
    crit = build_criterion("ce", num_classes=2, label_smoothing=0.1)
    loss, _ = crit(logits[:1], None, y[:1])
    # Smoothed target [.95, .05]: -(.95 ln .75 + .05 ln .25)
    assert float(loss) == pytest.approx(-(0.95 * math.log(0.75) + 0.05 * math.log(0.25)), abs=1e-6)


def test_bad_criterion_requests():
    with pytest.raises(InputError, match="loss kind"):
        build_criterion("focal", num_classes=7)
    with pytest.raises(InputError, match="class_weights"):
        build_criterion("ce", num_classes=7, class_weights=torch.ones(3))
    with pytest.raises(InputError, match="needs a teacher"):
        build_criterion("distill", num_classes=7)
    with pytest.raises(InputError, match="label_smoothing"):
        build_criterion("ce", num_classes=7, label_smoothing=1.5)


def _faces(n_per_class=2, size=48, seed=0):
    faces = synthetic_faceset(per_class=n_per_class, seed=seed, size=size)
    u8 = torch.from_numpy(faces.images).unsqueeze(1)
    return u8, (u8.float() / 255 - 0.5) / 0.25, torch.from_numpy(faces.labels)


@pytest.mark.parametrize("kind", ["triplet", "ce+triplet"])
def test_triplet_criteria_train_a_net(kind):
    torch.manual_seed(0)
    model = create_model("tiny_fer", dropout=0.0)
    crit = build_criterion(kind, num_classes=7, triplet=TripletConfig(margin=0.3, mining="batch_hard", weight=2.0))
    assert crit.needs_embedding
    _, x, y = _faces(size=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, grads = [], []
    model.train()
    for _ in range(4):
        emb = model.forward_features(x)
        loss, stats = crit(model.classifier(emb), emb, y)
        opt.zero_grad()
        loss.backward()
        grads.append((model.classifier[-1].weight.grad, model.features[0][0].weight.grad.clone()))
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert {"triplet", "active_triplets"} <= set(stats) and ("ce" in stats) == (kind == "ce+triplet")
    head_grad, trunk_grad = grads[0]
    # "triplet" alone trains only the embedding: the classifier is fitted later, by the heads.
    assert (head_grad is None or not head_grad.any()) if kind == "triplet" else head_grad.abs().sum() > 0
    assert trunk_grad.abs().sum() > 0


# --------------------------------------------------------------------------- distillation

def test_distill_loss_by_hand():
    teacher = lambda x: torch.zeros(len(x), 2)  # noqa: E731  soft targets [.5, .5]
    crit = build_criterion("distill", num_classes=2, teacher=teacher, distill_alpha=0.5, distill_temperature=2.0)
    logits = torch.tensor([[2 * math.log(3), 0.0]])  # at T=2: softmax [.75, .25]; at T=1: [.9, .1]
    loss, stats = crit(logits, None, torch.tensor([0]), torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(teacher || student) at T=2
    assert stats["kd"] == pytest.approx(kl * 4, abs=1e-6)
    assert float(loss) == pytest.approx(0.5 * kl * 4 + 0.5 * -math.log(0.9), abs=1e-6)
    with pytest.raises(InputError, match="inputs_uint8"):
        crit(logits, None, torch.tensor([0]))


def test_checkpoint_teacher_matches_its_network_and_distils_into_a_student(tiny_checkpoint):
    from fer_edge.export.checkpoint import load_checkpoint

    teacher = load_teacher(tiny_checkpoint, "cpu")
    u8, x, y = _faces()
    net, meta = load_checkpoint(tiny_checkpoint)
    assert meta["input"]["mean"] == [0.5] and meta["input"]["std"] == [0.25]  # what _faces normalises with
    with torch.no_grad():
        torch.testing.assert_close(teacher(u8), net(x))
    with pytest.raises(InputError, match="uint8"):
        teacher(x)

    # The student sees 32x32 crops; the teacher resizes them to its own 48x48.
    torch.manual_seed(0)
    u8_small = F.interpolate(u8.float(), size=(32, 32), mode="area").round().to(torch.uint8)
    x_small = (u8_small.float() / 255 - 0.5) / 0.25
    assert teacher(u8_small).shape == (len(y), 7)
    student = create_model("tiny_fer", dropout=0.0)
    crit = build_criterion("distill", num_classes=7, teacher=str(tiny_checkpoint), distill_alpha=0.9,
                           distill_temperature=4.0)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    kd = []
    student.train()
    for _ in range(4):
        loss, stats = crit(student(x_small), None, y, u8_small)
        opt.zero_grad()
        loss.backward()
        opt.step()
        kd.append(stats["kd"])
    assert kd[-1] < kd[0] and 0 <= stats["teacher_agreement"] <= 1


def test_bundle_teacher_runs_the_fp32_onnx_like_the_checkpoint(tiny_bundle, tiny_checkpoint):
    pytest.importorskip("onnxruntime")
    from_bundle = load_teacher(tiny_bundle, "cpu")
    from_checkpoint = load_teacher(tiny_checkpoint, "cpu")
    u8, x, y = _faces(n_per_class=1)
    torch.testing.assert_close(from_bundle(u8), from_checkpoint(u8), rtol=1e-4, atol=1e-4)

    student = create_model("tiny_fer", dropout=0.0)
    crit = build_criterion("distill", num_classes=7, teacher=from_bundle)
    loss, stats = crit(student(x), None, y, u8)
    loss.backward()
    assert student.classifier[-1].weight.grad.abs().sum() > 0 and {"kd", "ce"} <= set(stats)


def test_teacher_that_is_not_there(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_teacher(tmp_path / "nope.pt", "cpu")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="teacher"):
        load_teacher(tmp_path / "bad.pt", "cpu")
