"""Video: a generated clip through `fer-edge video`, image folders, the IoU tracker and its smoothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_edge.detect import DETECTORS
from fer_edge.errors import DataError, InputError
from fer_edge.video import (
    IouTracker,
    VideoConfig,
    open_source,
    run_video,
    synthetic_clip,
)

N_FRAMES = 16


def _need(name: str) -> None:
    ok, why = DETECTORS[name].probe()
    if not ok:
        pytest.skip(f"detector {name!r} is not usable here: {why} (CI installs it with .[all])")


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """An .avi written with OpenCV: one FER2013 sample face gliding across the frame."""
    cv2 = pytest.importorskip("cv2", reason="writing the test clip needs OpenCV (the video extra)")
    path = tmp_path_factory.mktemp("clip") / "moving_face.avi"
    frames = list(synthetic_clip(N_FRAMES))
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def test_cli_video_json_on_a_generated_clip(clip_path, tmp_path, capsys):
    _need("yunet")
    cv2 = pytest.importorskip("cv2")
    from fer_edge.cli import main

    out = tmp_path / "annotated.mp4"
    assert main(["video", str(clip_path), "--json", "--threads", "1", "--smooth", "0.6", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert [r["frame"] for r in frames] == list(range(N_FRAMES))
    assert all(len(r["faces"]) == 1 for r in frames)  # the face is found in every frame
    assert {r["faces"][0]["track"] for r in frames} == {1}  # and followed as one track
    xs = [r["faces"][0]["box"][0] for r in frames]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 200  # moving left to right, as generated
    face = frames[-1]["faces"][0]
    assert set(face) >= {"track", "box", "detection_score", "landmarks", "label", "score", "probs", "smoothed"}
    assert sum(face["smoothed"]["probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert summary["frames"] == N_FRAMES and summary["tracks"] == 1 and summary["faces"] == N_FRAMES
    assert summary["fps"] > 0 and summary["ms_per_frame"]["detect"] > 0
    cap = cv2.VideoCapture(str(out))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == N_FRAMES


def test_smoothing_is_an_exponential_moving_average_per_track():
    tr = IouTracker(iou=0.3, max_age=1, smoothing=0.75)
    a, b = np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1]
    t1 = tr.update(0, [(10, 10, 50, 50)], [a])[0]
    t2 = tr.update(1, [(14, 12, 50, 50)], [b])[0]  # overlaps: same track
    assert t2.id == t1.id == 1
    np.testing.assert_allclose(t2.probs, 0.75 * a + 0.25 * b)
    far = tr.update(2, [(300, 300, 50, 50), (16, 12, 50, 50)], [a, b])
    assert [t.id for t in far] == [2, 1]  # a new face gets a new id; the old one keeps its id
    tr.update(5, [], [])  # unseen for more than max_age frames: tracks end
    assert tr.tracks == {}
    assert tr.update(6, [(16, 12, 50, 50)], [a])[0].id == 3


def test_unsmoothed_tracks_report_the_frame_probabilities():
    tr = IouTracker(smoothing=0.0)
    a, b = np.eye(2, dtype=np.float32)
    tr.update(0, [(0, 0, 10, 10)], [a])
    np.testing.assert_array_equal(tr.update(1, [(0, 0, 10, 10)], [b])[0].probs, b)


def test_image_folder_source_in_name_order(tmp_path):
    _need("yunet")
    from PIL import Image

    frames = list(synthetic_clip(3))
    for i, f in zip((2, 0, 1), frames):
        Image.fromarray(f[:, :, ::-1]).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    records = []
    summary = run_video(tmp_path, config=VideoConfig(detector="yunet"), on_frame=records.append, threads=1)
    assert [r["source"] for r in records] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    assert summary["source"] == "folder" and summary["frames"] == 3
    assert all(len(r["faces"]) == 1 for r in records)


def test_frames_from_python_and_synthetic_sources(tmp_path):
    _need("yunet")
    records = []
    summary = run_video(iter(synthetic_clip(30)), on_frame=records.append, threads=1,
                        config=VideoConfig(max_frames=3))
    assert summary["frames"] == 3 and summary["source"] == "frames" and summary["tracks"] == 1
    src = open_source("synthetic:2")
    assert [name for name, _ in src.frames] == ["synthetic#0", "synthetic#1"]


def test_bad_sources_and_settings_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(DataError, match="no images"):
        open_source(tmp_path)
    with pytest.raises(InputError, match="synthetic:N"):
        open_source("synthetic:abc")
    with pytest.raises(InputError, match="iterable of uint8 frames"):
        open_source(3.5)
    with pytest.raises(InputError, match="smoothing"):
        VideoConfig(smoothing=1.0)


def test_faces_are_followed_between_detections():
    _need("yunet")
    from fer_edge.detect import Face
    from fer_edge.video import FaceFollower

    frames = list(synthetic_clip(N_FRAMES))
    every, followed = [], []
    s1 = run_video(frames, config=VideoConfig(detect_every=1), on_frame=every.append, threads=1)
    s4 = run_video(frames, config=VideoConfig(detect_every=4), on_frame=followed.append, threads=1)
    assert s1["frames_detected"] == N_FRAMES and [r["detected"] for r in every] == [True] * N_FRAMES
    assert s4["frames_detected"] == 4 and [r["detected"] for r in followed] == [i % 4 == 0 for i in range(N_FRAMES)]
    assert s4["tracking"]["detect_every"] == 4 and "every 4 frames" in s4["tracking"]["policy"]
    assert s4["tracks"] == 1 and all(len(r["faces"]) == 1 for r in followed)
    for a, b in zip(every, followed):  # the followed box stays on the detected one (the face moves 22 px a frame)
        ax, ay, aw, ah = a["faces"][0]["box"]
        bx, by, bw, bh = b["faces"][0]["box"]
        assert abs(ax - bx) <= 0.15 * aw and abs(ay - by) <= 0.15 * ah
    # the follower itself: a patch moved by (17, -9) px is found there
    rng = np.random.default_rng(0)
    img = (rng.integers(0, 256, (40, 60)).repeat(6, 0).repeat(6, 1)).astype(np.uint8)
    moved = np.roll(img, (-9, 17), axis=(0, 1))
    f = FaceFollower()
    f.reset(img, {1: Face((120, 60, 96, 96), 0.9, np.float32([[150, 90]] * 5))})
    face, corr = f.follow(moved, {1: Face((120, 60, 96, 96), 0.9, np.float32([[150, 90]] * 5))})[1]
    assert corr > 0.9 and abs(face.box[0] - 137) <= 3 and abs(face.box[1] - 51) <= 3
    np.testing.assert_allclose(face.landmarks[0] - [150, 90], [face.box[0] - 120, face.box[1] - 60], atol=0.01)


def test_a_face_that_leaves_is_detected_at_once():
    _need("yunet")
    frames = list(synthetic_clip(6))
    frames[3] = np.full_like(frames[3], 120)  # the face is gone in frame 3
    records = []
    run_video(frames, config=VideoConfig(detect_every=10), on_frame=records.append, threads=1)
    assert [r["detected"] for r in records[:4]] == [True, False, False, True]
    assert records[3]["faces"] == []


def test_tracking_settings_and_bad_frames_are_clear_errors():
    for bad in ({"detect_every": 0}, {"detect_every": 2.5}, {"redetect_below": 1.5}, {"min_face": 2}):
        with pytest.raises(InputError):
            VideoConfig(**bad)
    _need("yunet")
    frames = [*synthetic_clip(2), np.zeros((10, 10), np.float32)]
    with pytest.raises(InputError, match="uint8"):
        run_video(frames, config=VideoConfig(detect_every=5), threads=1)  # frame 2 would only be followed


def test_a_stream_runs_the_video_loop_one_frame_at_a_time():
    """A webcam app owns its loop: FaceStream(frame) gives run_video's records, frame by frame."""
    _need("yunet")
    from fer_edge import Recognizer
    from fer_edge.video import FaceStream

    frames = list(synthetic_clip(N_FRAMES))
    rec = Recognizer(threads=1)
    cfg = VideoConfig(detect_every=4, smoothing=0.5)
    looped = []
    summary = run_video(frames, rec, config=cfg, on_frame=looped.append)
    stream = FaceStream(rec, cfg)
    streamed = [stream(f) for f in frames]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("ms", "source")}  # noqa: E731
    assert [strip(r) for r in streamed] == [strip(r) for r in looped]
    info = stream.describe()
    assert info["frames"] == N_FRAMES and info["frames_detected"] == summary["frames_detected"] == 4
    assert info["tracking"] == summary["tracking"] and info["tracks"] == 1
    # the smoothed label is the track's moving average, not the frame's own
    probs = [np.array(list(r["faces"][0]["probs"].values())) for r in streamed]
    avg = probs[0]
    for p in probs[1:]:
        avg = 0.5 * avg + 0.5 * p
    np.testing.assert_allclose(list(streamed[-1]["faces"][0]["smoothed"]["probs"].values()), avg, atol=2e-5)
    with pytest.raises(InputError, match="VideoConfig"):
        FaceStream(rec, {"detect_every": 4})
    with pytest.raises(InputError, match="uint8"):
        stream(np.zeros((10, 10), np.float32))


def test_the_webcam_example_runs_on_a_generated_clip():
    _need("yunet")
    import os
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "webcam.py"
    r = subprocess.run([sys.executable, str(example), "synthetic:12", "--threads", "1", "--detect-every", "5"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})  # no display: the example prints instead
    assert r.returncode == 0, r.stderr[-2000:]
    assert "12 frames at" in r.stdout and "detected on 3 of them" in r.stdout
