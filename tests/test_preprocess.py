"""fer_edge.preprocess: to_gray, resize, preprocess and InputSpec, checked against OpenCV where it applies."""

from __future__ import annotations

import numpy as np
import pytest

from fer_edge.errors import FerEdgeError, InputError
from fer_edge.preprocess import InputSpec, preprocess, resize, to_gray

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is needed to compare against cv2")


def _rand(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --------------------------------------------------------------------------- to_gray


def test_to_gray_passes_gray_through():
    img = _rand((7, 9))
    out = to_gray(img)
    assert out.dtype == np.uint8 and out.shape == (7, 9)
    np.testing.assert_array_equal(out, img)


def test_to_gray_squeezes_single_channel():
    img = _rand((6, 5, 1))
    out = to_gray(img)
    assert out.shape == (6, 5) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, img[:, :, 0])


@pytest.mark.parametrize("shape", [(31, 17, 3), (64, 64, 3), (1, 1, 3)])
def test_to_gray_bgr_matches_cv2(shape):
    img = _rand(shape, seed=sum(shape))
    out = to_gray(img)
    ref = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert out.shape == shape[:2] and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_to_gray_bgra_matches_cv2_and_ignores_alpha():
    img = _rand((23, 29, 4), seed=3)
    out = to_gray(img)
    ref = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    other_alpha = img.copy()
    other_alpha[:, :, 3] = 255 - other_alpha[:, :, 3]
    np.testing.assert_array_equal(to_gray(other_alpha), out)


def test_to_gray_channel_order_is_bgr():
    # Pure blue in BGR is dark (0.114), pure red is brighter (0.299): order matters.
    blue = np.zeros((2, 2, 3), np.uint8)
    blue[:, :, 0] = 255
    red = np.zeros((2, 2, 3), np.uint8)
    red[:, :, 2] = 255
    assert int(to_gray(blue)[0, 0]) == round(255 * 0.114)
    assert int(to_gray(red)[0, 0]) == round(255 * 0.299)


def test_to_gray_equal_channels_stay_exact():
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(to_gray(np.dstack([g, g, g])), g)


def test_to_gray_accepts_non_contiguous_views():
    img = _rand((20, 30, 3), seed=5)[::2, ::-1]
    ref = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY)
    assert np.abs(to_gray(img).astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "bad, words",
    [
        (None, ["None", "uint8"]),
        ([[1, 2], [3, 4]], ["list", "uint8"]),
        ("img.png", ["str"]),
        (np.zeros((4, 4), np.float32), ["float32", "uint8"]),
        (np.zeros((4, 4), np.int64), ["int64", "uint8"]),
        (np.full((4, 4), np.nan, np.float32), ["NaN"]),
        (np.array([[0.5, np.inf]]), ["infinite"]),
        (np.zeros((0, 0), np.uint8), ["empty"]),
        (np.zeros((0, 5, 3), np.uint8), ["empty"]),
        (np.zeros((0, 0, 1), np.uint8), ["empty"]),
        (np.zeros((10,), np.uint8), ["shape", "(10,)"]),
        (np.zeros((4, 4, 2), np.uint8), ["shape", "(4, 4, 2)"]),
        (np.zeros((4, 4, 5), np.uint8), ["shape"]),
        (np.zeros((2, 4, 4, 3), np.uint8), ["shape"]),
        (np.array(3, np.uint8), ["shape"]),
        (np.uint8(3), ["numpy array"]),
    ],
)
def test_to_gray_rejects_bad_input(bad, words):
    with pytest.raises(InputError) as info:
        to_gray(bad)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FerEdgeError)


def test_to_gray_float_message_suggests_conversion():
    with pytest.raises(ValueError, match=r"astype\(np.uint8\)"):
        to_gray(np.zeros((3, 3)))


def test_to_gray_names_the_argument():
    with pytest.raises(InputError, match=r"^frame\b"):
        to_gray(None, what="frame")


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize("src", [(96, 96), (100, 80), (97, 131), (49, 200), (480, 640)])
def test_resize_area_shrinking_matches_cv2_inter_area(src):
    img = _rand(src, seed=src[0])
    out = resize(img, (48, 48), "area")
    ref = cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA)  # cv2 takes (width, height)
    assert out.shape == (48, 48) and out.dtype == np.float32
    assert np.abs(out - ref.astype(np.float32)).max() <= 1.0


@pytest.mark.parametrize("src, dst", [((96, 96), (48, 48)), ((100, 80), (48, 48)), ((20, 30), (48, 48)),
                                      ((37, 53), (48, 64)), ((100, 30), (48, 48)), ((1, 7), (8, 9))])
def test_resize_bilinear_matches_cv2_inter_linear(src, dst):
    img = _rand(src, seed=src[1])
    out = resize(img, dst, "bilinear")
    ref = cv2.resize(img, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    assert out.shape == dst and out.dtype == np.float32
    assert np.abs(out - ref.astype(np.float32)).max() <= 1.0


def test_resize_area_enlarging_is_bilinear():
    img = _rand((20, 30), seed=9)
    np.testing.assert_allclose(resize(img, (48, 48), "area"), resize(img, (48, 48), "bilinear"), atol=1e-4)


def test_resize_area_integer_factor_is_block_mean():
    img = _rand((96, 144), seed=11)
    expected = img.reshape(48, 2, 48, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(resize(img, (48, 48), "area"), expected, atol=1e-3)


def test_resize_same_size_is_identity_float():
    img = _rand((48, 48))
    out = resize(img, (48, 48))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_resize_one_axis_unchanged():
    img = _rand((48, 100), seed=2)
    out = resize(img, (48, 50), "area")
    expected = img.reshape(48, 50, 2).astype(np.float64).mean(axis=2)
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_resize_keeps_constant_images_constant():
    img = np.full((73, 41), 200, np.uint8)
    for method in ("area", "bilinear"):
        np.testing.assert_allclose(resize(img, (48, 48), method), 200.0, atol=1e-3)


def test_resize_is_height_width():
    out = resize(_rand((60, 40)), (30, 20))
    assert out.shape == (30, 20)


# --------------------------------------------------------------------------- preprocess


def test_preprocess_list_of_mixed_images():
    spec = InputSpec()
    images = [_rand((48, 48), 1), _rand((100, 80, 3), 2), _rand((30, 30, 4), 3), _rand((48, 48, 1), 4)]
    batch = preprocess(images, spec)
    assert batch.shape == (4, 1, 48, 48)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    np.testing.assert_allclose(batch[0, 0], images[0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(batch[1, 0], resize(to_gray(images[1]), (48, 48), "area") / 255.0, atol=1e-6)
    ref = cv2.resize(cv2.cvtColor(images[1], cv2.COLOR_BGR2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(batch[1, 0] * 255.0 - ref).max() <= 1.5
    np.testing.assert_allclose(batch[3, 0], images[3][:, :, 0] / 255.0, atol=1e-6)


def test_preprocess_gray_batch_array():
    arr = _rand((5, 64, 64), seed=8)
    spec = InputSpec(size=(32, 32))
    batch = preprocess(arr, spec)
    assert batch.shape == (5, 1, 32, 32) and batch.dtype == np.float32
    for i in range(5):
        np.testing.assert_allclose(batch[i, 0], arr[i].reshape(32, 2, 32, 2).mean(axis=(1, 3)) / 255.0, atol=1e-5)


def test_preprocess_colour_batch_array():
    arr = _rand((3, 48, 48, 3), seed=4)
    batch = preprocess(arr, InputSpec())
    assert batch.shape == (3, 1, 48, 48)
    for i in range(3):
        ref = cv2.cvtColor(arr[i], cv2.COLOR_BGR2GRAY) / 255.0
        assert np.abs(batch[i, 0] - ref).max() <= 1.0 / 255.0 + 1e-6


def test_preprocess_non_square_size():
    batch = preprocess([_rand((120, 90))], InputSpec(size=(40, 30)))
    assert batch.shape == (1, 1, 40, 30)


def test_preprocess_normalisation():
    spec = InputSpec(scale=1 / 255.0, mean=(0.5,), std=(0.25,))
    images = [np.full((48, 48), v, np.uint8) for v in (0, 51, 255)]
    batch = preprocess(images, spec)
    for img, v in zip(batch, (0, 51, 255)):
        np.testing.assert_allclose(img, (v / 255.0 - 0.5) / 0.25, atol=1e-5)


def test_preprocess_raw_scale():
    spec = InputSpec(scale=1.0, mean=(128.0,), std=(64.0,))
    batch = preprocess([np.full((10, 10), 192, np.uint8)], spec)
    assert batch.shape == (1, 1, 48, 48)
    np.testing.assert_allclose(batch, 1.0, atol=1e-5)


def test_preprocess_bilinear_spec_uses_bilinear():
    img = _rand((100, 100), seed=6)
    out = preprocess([img], InputSpec(interpolation="bilinear"))[0, 0] * 255.0
    ref = cv2.resize(img, (48, 48), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out - ref).max() <= 1.0 + 1e-3
    area = preprocess([img], InputSpec())[0, 0] * 255.0
    assert np.abs(out - area).max() > 1.0  # the two really differ on noise


@pytest.mark.parametrize(
    "images, match",
    [
        (None, "None"),
        ([], "empty"),
        (np.zeros((0, 48, 48), np.uint8), "empty"),
        (np.zeros((48, 48), np.uint8), "N x H x W"),
        (np.zeros((1, 2, 48, 48, 3), np.uint8), "N x H x W"),
        ([np.zeros((48, 48), np.uint8), np.zeros((48, 48), np.float32)], r"image\[1\]"),
        ([np.zeros((48, 48), np.uint8), None], r"image\[1\] is None"),
    ],
)
def test_preprocess_errors(images, match):
    with pytest.raises(InputError, match=match):
        preprocess(images, InputSpec())


# --------------------------------------------------------------------------- InputSpec


def test_input_spec_defaults():
    spec = InputSpec()
    assert spec.size == (48, 48) and spec.channels == 1 and spec.color == "gray"
    assert spec.layout == "NCHW" and spec.dtype == "float32" and spec.interpolation == "area"
    assert spec.scale == pytest.approx(1 / 255.0)


def test_input_spec_round_trip_through_json():
    import json

    spec = InputSpec(size=(64, 56), scale=1.0, mean=(127.5,), std=(127.5,), interpolation="bilinear",
                     input_name="pixels")
    d = spec.to_dict()
    assert d["size"] == [64, 56] and d["mean"] == [127.5] and d["std"] == [127.5]
    back = InputSpec.from_dict(json.loads(json.dumps(d)))
    assert back == spec
    assert isinstance(back.size, tuple) and isinstance(back.mean, tuple)
    assert InputSpec.from_dict(InputSpec().to_dict()) == InputSpec()


def test_input_spec_from_partial_dict_uses_defaults():
    assert InputSpec.from_dict({"size": [32, 32]}) == InputSpec(size=(32, 32))
    assert InputSpec.from_dict({}) == InputSpec()


def test_input_spec_is_frozen():
    with pytest.raises(Exception):
        InputSpec().size = (10, 10)  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"interpolation": "nearest"}, "interpolation"),
        ({"channels": 3}, "grayscale"),
        ({"color": "rgb"}, "grayscale"),
        ({"layout": "NHWC"}, "NCHW"),
        ({"dtype": "float16"}, "float32"),
        ({"size": (48,)}, "size"),
        ({"size": (48, 48, 1)}, "size"),
        ({"size": (4, 48)}, "size"),
    ],
)
def test_input_spec_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        InputSpec(**kwargs)
    with pytest.raises(InputError, match=match):
        InputSpec.from_dict({**InputSpec().to_dict(), **kwargs})


def test_input_spec_from_dict_rejects_unknown_fields():
    with pytest.raises(InputError, match="resize_mode"):
        InputSpec.from_dict({**InputSpec().to_dict(), "resize_mode": "area"})


@pytest.mark.parametrize("bad", [{"size": 48}, {"std": [0.0]}])
def test_input_spec_rejects_malformed_values(bad):
    with pytest.raises(InputError):
        InputSpec.from_dict(bad)


def test_median_filter_matches_training_filter():
    torch = pytest.importorskip("torch")
    from fer_edge.preprocess import InputSpec, preprocess
    from fer_edge.train.augment import median_filter as torch_median

    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (4, 48, 48), dtype=np.uint8)
    spec = InputSpec(scale=1.0, mean=(0.0,), std=(1.0,), median=3)
    got = preprocess(faces, spec)[:, 0]
    want = torch_median(torch.from_numpy(faces).unsqueeze(1), 3)[:, 0].numpy().astype(np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("median", [1, 2, -3, 4.0])
def test_median_kernel_must_be_odd(median):
    from fer_edge.errors import InputError
    from fer_edge.preprocess import InputSpec

    with pytest.raises(InputError, match="median"):
        InputSpec(median=median)
