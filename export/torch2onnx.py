"""PyTorch network -> one self-describing FP32 ONNX file with outputs (logits, embedding)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ExportError

INPUT = "input"
OUTPUTS = ("logits", "embedding")
OPSET = 17
PARITY_ATOL = 1e-4
PREFIX = "fer_edge."  # metadata_props keys we write


def torch2onnx(model: Any, dst: str | os.PathLike, *, size: tuple[int, int] = (48, 48),
               metadata: dict[str, Any] | None = None, atol: float = PARITY_ATOL, simplify: bool = True) -> Path:
    """Export `model` (a FerNet) to `dst`: input "input" (N, 1, H, W) float32 with a dynamic batch,
    outputs "logits" and "embedding", weights inside the file, `metadata` in metadata_props under
    `fer_edge.<key>` (see `stamp`).

    With `simplify`, the graph goes through onnxsim when it is installed (constant folding and
    dead-node removal: an optimisation, so its absence is recorded in `fer_edge.simplified`, not
    fatal). The final file is checked against torch on a few inputs (batch 1 and 3) and refused
    beyond `atol`.
    """
    import onnx
    import torch

    from ..train.models import WithEmbedding

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    net = model if isinstance(model, WithEmbedding) else WithEmbedding(model)
    was_training = model.training  # the wrapper is new (training=True); the caller's mode is the model's
    net.eval()
    try:
        x = torch.zeros(1, 1, *size)
        # The legacy exporter: ~0.5 s, opset 17, a plain Conv/Gemm graph, no external data file.
        # dynamo=True also works but takes 2-6 s, needs opset >= 18 and prints progress to stdout.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(dst), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=list(OUTPUTS),
                              dynamic_axes={n: {0: "batch"} for n in (INPUT, *OUTPUTS)},
                              do_constant_folding=True)
        proto = onnx.load(str(dst))
        proto, simplified = simplify_graph(proto) if simplify else (proto, "no (not asked)")
        stamp(proto, {"sdk_version": __version__, "precision": "fp32", "simplified": simplified,
                      "exporter": f"torch {torch.__version__} (legacy, opset {OPSET})", **(metadata or {})})
        onnx.checker.check_model(proto)
        onnx.save(proto, str(dst))
        check_parity(net, dst, size, atol)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"torch -> ONNX export failed: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    return dst


def simplify_graph(proto: Any) -> tuple[Any, str]:
    """(graph, what was done). onnxsim with a dynamic batch; any failure keeps the original graph."""
    try:
        import onnxsim
    except ImportError:
        return proto, "no (onnxsim not installed: pip install onnxsim)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simplified, ok = onnxsim.simplify(proto)
    except Exception as e:  # onnxsim raises plain RuntimeErrors from its C++ core
        return proto, f"no (onnxsim {onnxsim.__version__} failed: {type(e).__name__}: {str(e)[:200]})"
    if not ok:
        return proto, f"no (onnxsim {onnxsim.__version__} could not validate its result)"
    return simplified, f"onnxsim {onnxsim.__version__}"


def stamp(proto: Any, metadata: dict[str, Any]) -> None:
    """Set metadata_props `fer_edge.<key>` (string values; others are JSON-encoded), replacing keys
    already there. The prefix keeps ours apart from other tools' keys in the same file."""
    values = {_key(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    keep = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _key(k: str) -> str:
    return k if k.startswith(PREFIX) else PREFIX + k


def metadata_of(path: str | os.PathLike) -> dict[str, str]:
    """Our metadata_props of an ONNX file, keys without the `fer_edge.` prefix."""
    import onnx

    props = onnx.load(str(path), load_external_data=False).metadata_props
    return {p.key[len(PREFIX):]: p.value for p in props if p.key.startswith(PREFIX)}


def ort_session(path: str | os.PathLike):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1  # parity checks run a few tiny batches; threads would only spin
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_parity(net: Any, path: Path, size: tuple[int, int], atol: float) -> None:
    import torch

    session = ort_session(path)
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # 3 also proves the batch axis is really dynamic
        x = rng.standard_normal((batch, 1, *size)).astype(np.float32)
        with torch.no_grad():
            expected = [t.numpy() for t in net(torch.from_numpy(x))]
        got = session.run(list(OUTPUTS), {INPUT: x})
        for name, e, g in zip(OUTPUTS, expected, got):
            diff = float(np.max(np.abs(e - g)))
            if not diff <= atol:  # also catches NaN
                raise ExportError(f"{path.name}: ONNX {name} differs from torch by {diff:.3g} at batch {batch} "
                                  f"(tolerance {atol:g})")
