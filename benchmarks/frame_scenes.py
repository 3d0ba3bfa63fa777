"""Frames built from FER2013 test faces, for benchmarks/frames.py (and its peer worker, which
imports nothing of fer_edge: numpy and OpenCV only).

A scene is a 640x480 BGR frame on a smooth random background with faces pasted as squares
(upscaled from 48 px with bilinear interpolation) at sizes drawn log-uniformly from 40-250 px, at
free positions; the pasted square is the ground-truth box and the face's test label its
expression. A sequence moves each face a few pixels per frame (and grows or shrinks it a little),
as a face in a webcam clip does.
"""

from __future__ import annotations

import numpy as np

SIZE = (480, 640)  # frame height, width


def background(rng: np.random.Generator, size=SIZE) -> np.ndarray:
    import cv2

    h, w = size
    coarse = rng.integers(40, 215, (6, 8, 3)).astype(np.uint8)
    frame = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 4, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, face: np.ndarray, box) -> None:
    import cv2

    x, y, side, _ = box
    frame[y:y + side, x:x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_LINEAR)[:, :, None]


def place(rng: np.random.Generator, n: int, sizes=(40, 250), size=SIZE, tries: int = 200) -> list:
    """n non-overlapping square boxes (x, y, side, side) inside the frame."""
    h, w = size
    boxes: list = []
    for _ in range(tries):
        if len(boxes) == n:
            break
        side = int(round(np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1])))))
        side = min(side, h - 2, w - 2)
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        if all(x + side <= bx or bx + bs <= x or y + side <= by or by + bs <= y for bx, by, bs, _ in boxes):
            boxes.append((x, y, side, side))
    return boxes


def stills(images: np.ndarray, labels: np.ndarray, n_frames: int, faces_per_frame: tuple[int, int],
           seed: int = 0, sizes=(40, 250)):
    """n_frames scenes, each with faces_per_frame[0]..[1] faces: (frame, [(box, label), ...])."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    k = 0
    for _ in range(n_frames):
        frame = background(rng)
        truths = []
        for box in place(rng, int(rng.integers(faces_per_frame[0], faces_per_frame[1] + 1)), sizes):
            i = order[k % len(order)]
            k += 1
            paste(frame, images[i], box)
            truths.append((box, int(labels[i])))
        yield frame, truths


def sequence(images: np.ndarray, labels: np.ndarray, n_frames: int, n_faces: int = 2, seed: int = 1,
             sizes=(50, 200), step: float = 3.0):
    """A clip: n_faces faces drifting (about `step` px per frame, sizes changing by <= 1 %)."""
    rng = np.random.default_rng(seed)
    base = background(rng)
    h, w = SIZE
    boxes = place(rng, n_faces, sizes)
    picks = rng.choice(len(images), len(boxes), replace=False)
    pos = np.array([[b[0], b[1], b[2]] for b in boxes], dtype=np.float64)
    vel = rng.uniform(-step, step, (len(boxes), 2))
    for _ in range(n_frames):
        frame = base.copy()
        truths = []
        for j, i in enumerate(picks):
            x, y, s = pos[j]
            box = (int(round(x)), int(round(y)), int(round(s)), int(round(s)))
            paste(frame, images[i], box)
            truths.append((box, int(labels[i])))
            pos[j, 2] = np.clip(s * rng.uniform(0.99, 1.01), sizes[0], sizes[1])
            pos[j, :2] += vel[j]
            for d, limit in ((0, w), (1, h)):  # bounce off the frame's edges
                if not 0 <= pos[j, d] <= limit - pos[j, 2] - 1:
                    vel[j, d] = -vel[j, d]
                    pos[j, d] = np.clip(pos[j, d], 0, limit - pos[j, 2] - 1)
        yield frame, truths
