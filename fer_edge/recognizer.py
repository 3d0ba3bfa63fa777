"""Recognizer: bundle -> backend + head; crops -> preprocess -> views -> backbone -> classify -> Prediction."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .bundle import Bundle
from .errors import BundleError, InputError
from .calibration import apply_temperature, manifest_temperature
from .preprocess import preprocess
from .tta import check_mode, mean_over_views, num_views, stacked_views
from .types import Prediction

MAX_CHUNK = 256  # bounds memory for very large predict_batch calls


class Recognizer:
    """Recognise facial expressions in face crops.

    model: None (the packaged default), a packaged model name, or a bundle folder / zip.
    backend: "auto" (each usable backend timed briefly here at its gated precision, the fastest
      kept and cached per bundle and machine; FER_EDGE_AUTO=order takes the fixed preference order
      instead), "fastest" (every backend x precision pair timed longer, also cached; `refresh=True`
      re-times either), or a name
      ("onnxruntime", "openvino", "tensorrt"); an explicit backend never falls back to another,
      and `strict=True` makes auto/fastest raise when a usable backend fails to load.
    precision: "auto" (INT8 where shipped and it passed the accuracy gate, else FP32) or
      "fp32" / "fp16" / "int8".
    head: "auto" (the manifest's default head), "in_graph" (the graph's logits) or a head the
      bundle ships ("xgboost", "linear"); a named head that cannot load raises.
    threads: fix the backend's (and the compiled head's) thread count.
    device: one vocabulary for every backend (fer_edge.runtimes.devices): "cpu", "cuda[:N]"
      ("gpu[:N]": the same, or OpenVINO's GPU plugin), or a backend's own name (onnxruntime
      "tensorrt[:N]", openvino "NPU" / "AUTO"). None, the default, is one rule for all: a CUDA GPU
      where the backend can use one here, else the CPU.
    tta: test-time augmentation of predict/predict_proba: "none", "flip" (2 views) or "ten_crop"
      (10 views); the views' probabilities are averaged (embed() stays plain).
    calibrated: apply the bundle's fitted temperature to the probabilities (argmax unchanged); with
      TTA, the temperature the export fitted for that mode.
    `describe()` says what was chosen and why. One Recognizer may be called from many threads.
    """

    def __init__(self, model: str | os.PathLike | None = None, backend: str = "auto", *, precision: str = "auto",
                 head: str = "auto", threads: int | None = None, device: str | None = None, strict: bool = False,
                 refresh: bool = False, bundle: Bundle | None = None, tta: str = "none",
                 calibrated: bool = True) -> None:
        from .runtimes import select_backend  # lazy: keeps `import fer_edge` numpy-only
        from .runtimes.heads import load_head

        if bundle is not None and model is not None:
            raise InputError("pass either model= or bundle=, not both")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.bundle = bundle if bundle is not None else Bundle.open(model)
        self.threads = threads  # the face detector made for predict_frame gets the same budget
        m = self.bundle.manifest
        self.spec = m.input
        self.labels = tuple(m.labels)
        self._outputs = m.model["outputs"]
        self.head = load_head(self.bundle, head, threads=threads)  # cheap, so a bad head fails first
        self.tta = check_mode(tta)
        self.temperature = manifest_temperature(m, self.head.describe().get("name"), self.tta) if calibrated else 1.0
        self._selection = select_backend(self.bundle, backend, precision=precision, threads=threads, device=device,
                                         strict=strict, refresh=refresh)

    @property
    def manifest(self):
        return self.bundle.manifest

    @property
    def backend(self) -> str:
        return self._selection.name

    @property
    def precision(self) -> str:
        return self._selection.precision

    def describe(self) -> dict[str, Any]:
        s = self._selection
        return {"model": self.manifest.name, "source": str(self.bundle.source), **s.describe(),
                **{k: v for k, v in s.backend.describe().items() if k != "backend"}, "head": self.head.describe(),
                "tta": self.tta, "temperature": self.temperature,
                **({"detectors": {k: d.describe() for k, d in self.__dict__["_face_detectors"].items()}}
                   if self.__dict__.get("_face_detectors") else {})}

    # --- the stages: crops -> preprocess -> views -> backbone -> classify -> probabilities -----------
    # Every caller (predict_*, embed, profile, evaluate) goes through these, so the path from an
    # image to a prediction is written once; the test-time augmentation is the Recognizer's own.

    def preprocess(self, crops: Sequence[Any], *, names: Sequence[str] | None = None) -> np.ndarray:
        """Stage 1: crops -> the model's (N, 1, H, W) float32 input, by the bundle's input spec.
        `names` (one per crop, e.g. file paths) name the crops in errors."""
        return preprocess(crops, self.spec, names=names)

    def views(self, batch: np.ndarray) -> np.ndarray:
        """Stage 2: the Recognizer's test-time augmentation views of a preprocessed batch, stacked
        (views x N rows; the batch itself with tta="none")."""
        return batch if self.tta == "none" else stacked_views(batch, self.tta)

    def backbone(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Stage 3: a preprocessed batch -> {"embedding": (N, F), "logits": (N, C)} from the backend
        (at most MAX_CHUNK crops per backend call)."""
        outs = [self._run(batch[i : i + MAX_CHUNK]) for i in range(0, len(batch), MAX_CHUNK)]
        return {role: (outs[0][name] if len(outs) == 1 else np.concatenate([o[name] for o in outs]))
                for role, name in self._outputs.items()}

    def classify(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Stage 4: the backbone's outputs of `views(batch)` -> (N, num_classes) probabilities through
        `self.head`, at the Recognizer's temperature; with TTA the views' probabilities are averaged
        first, then calibrated."""
        n = num_views(self.tta)
        if n == 1:
            probs = self.head.probabilities(outputs["embedding"], outputs["logits"], self.temperature)
        else:
            if len(outputs["logits"]) % n:
                raise InputError(f"tta={self.tta!r} has {n} views per crop, but the outputs have "
                                 f"{len(outputs['logits'])} rows: classify the backbone outputs of views(batch)")
            probs = apply_temperature(mean_over_views(self.head(outputs["embedding"], outputs["logits"]), self.tta),
                                      self.temperature)
        if probs.shape[1:] != (len(self.labels),):
            raise BundleError(f"head {self.head.describe().get('name')!r} returned shape {probs.shape}; "
                              f"expected (N, {len(self.labels)})")
        return probs

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._selection.backend.run(batch)

    def batch_proba(self, batch: np.ndarray) -> np.ndarray:
        """Stages 2 to 4 on a preprocessed batch (a chunk's views in one backend call): what
        predict_proba returns."""
        step = max(1, MAX_CHUNK // num_views(self.tta))  # backbone() chunks plain batches itself
        if self.tta == "none" or len(batch) <= step:
            return self.classify(self.backbone(self.views(batch)))
        return np.concatenate([self.classify(self.backbone(self.views(batch[i : i + step])))
                               for i in range(0, len(batch), step)])

    def predict_proba(self, crops: Sequence[Any], *, names: Sequence[str] | None = None) -> np.ndarray:
        """(N, num_classes) probabilities for a list of crops (or an N x H x W[x C] uint8 array)."""
        return self.batch_proba(self.preprocess(crops, names=names))

    def embed(self, crops: Sequence[Any], *, names: Sequence[str] | None = None) -> np.ndarray:
        """(N, feature_dim) pooled embeddings (the input of tree or linear heads)."""
        return self.backbone(self.preprocess(crops, names=names))["embedding"]

    def predict_batch(self, crops: Sequence[Any], *, names: Sequence[str] | None = None) -> list[Prediction]:
        """Many crops through the backend in batches (up to MAX_CHUNK per backend call)."""
        probs = self.predict_proba(crops, names=names)
        best = probs.argmax(axis=1)
        return [Prediction(self.labels[b], float(p[b]), p, self.labels) for b, p in zip(best, probs)]

    def predict(self, crop: Any) -> Prediction:
        """One face crop: uint8 HxW gray, HxWx3 BGR or HxWx4 BGRA, 8 to 4096 px a side."""
        probs = self.predict_proba([crop], names=("image",))[0]
        best = int(probs.argmax())
        return Prediction(self.labels[best], float(probs[best]), probs, self.labels)

    __call__ = predict

    def __repr__(self) -> str:
        return (f"Recognizer({self.manifest.name!r}, backend={self.backend!r}, precision={self.precision!r}, "
                f"head={self.head.describe().get('name')!r}"
                + (f", tta={self.tta!r}" if self.tta != "none" else "") + ")")

    # Faces in frames (fer_edge.detect). `detector` is a name ("auto", "yunet", "haar") or a
    # fer_edge.detect.Detector; set the attribute to change the default, made on first use.
    detector = "auto"

    def detect(self, frame: Any, *, detector: Any = None) -> list:
        """Faces in a uint8 frame (HxW gray, HxWx3 BGR, HxWx4 BGRA): list of fer_edge.detect.Face."""
        from .detect import detector_for

        return detector_for(self, detector).detect(frame)

    def predict_frame(self, frame: Any, *, detector: Any = None, margin: float | None = None,
                      align: bool = True) -> list:
        """Every face in a frame, cropped (margin: the detector's own when None), aligned by the
        eyes when the detector gives landmarks, and recognised: list of fer_edge.detect.FaceResult."""
        from .detect import predict_frame

        return predict_frame(self, frame, detector=detector, margin=margin, align=align)
