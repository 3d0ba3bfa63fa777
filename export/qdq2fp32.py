"""QDQ INT8 ONNX -> FP32 ONNX with the same weights: each INT8 weight times its scale (less its zero
point), each activation Quantize/Dequantize pair replaced by the ReLU it stood for (or nothing).

For a bundle whose FP32 checkpoint is gone (the packaged `base`): the other converters (ncnn) can
then start from the very weights the bundle ships, in FP32 arithmetic. The metadata (the identity
stamp) is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ExportError


def qdq2fp32(src_onnx: str | os.PathLike, dst_onnx: str | os.PathLike) -> Path:
    import onnx

    src, dst = Path(src_onnx), Path(dst_onnx)
    try:
        model = onnx.load(str(src))
    except Exception as e:
        raise ExportError(f"cannot read {src}: {type(e).__name__}: {e}") from e
    model = dequantize(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def dequantize(model):
    """The QDQ model, dequantized in place (see the module docstring); checked by onnx.checker."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    folded, drop, replaced = {}, set(), {}
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        x = n.input[0]
        scale = inits[n.input[1]]
        zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros_like(scale, dtype=np.int32)
        if x in inits:  # a weight: fold
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            q = inits[x].astype(np.float32)
            shape = [1] * q.ndim
            if scale.ndim:
                shape[axis] = -1
            folded[n.output[0]] = (q - zp.astype(np.float32).reshape(shape)) * scale.astype(np.float32).reshape(shape)
            drop.add(id(n))
        elif x in producer and producer[x].op_type == "QuantizeLinear":  # an activation pair: bypass
            # The quantizer drops a ReLU whose output range starts at the zero point (the clamp to the
            # integer range does its work), so a pair at the type's minimum becomes a Relu again.
            q = producer[x]
            drop.update((id(n), id(q)))
            q_zp = inits.get(q.input[2]) if len(q.input) > 2 else None
            floor = q_zp is not None and q_zp.size == 1 and int(q_zp) == np.iinfo(q_zp.dtype).min
            replaced[id(n)] = onnx.helper.make_node("Relu" if floor else "Identity", [q.input[0]], [n.output[0]])
    if not drop:
        raise ExportError("the model has no QuantizeLinear/DequantizeLinear pairs: not a QDQ INT8 model")
    graph = model.graph
    keep = [replaced.get(id(n), n) for n in graph.node if id(n) not in drop or id(n) in replaced]
    used = {i for n in keep for i in n.input}
    inits_kept = [i for i in graph.initializer if i.name in used and i.name not in folded]
    inits_kept += [numpy_helper.from_array(v.astype(np.float32), k) for k, v in folded.items() if k in used]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(inits_kept)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ExportError(f"the dequantized model does not check: {e}") from e
    return model
