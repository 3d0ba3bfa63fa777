"""FP32 ONNX -> FP16 ONNX with FP32 inputs and outputs (casts at the edges).

The source of TensorRT 11 FP16 engines (strongly typed networks take their precision from the
graph; the FP16 builder flag is gone). onnxconverter-common would do this too, but it is not a
dependency; our graphs hold only Conv/Gemm/pooling/activation ops, for which casting every float
initializer and constant is the whole job. Not shipped for ONNX Runtime: its CPU provider runs
FP16 Conv slower than FP32 on x86, so an ORT FP16 artifact would be a pessimisation here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .torch2onnx import metadata_of, stamp


def onnx2fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ExportError(f"ONNX model not found: {src}")
    model = onnx.load(str(src))
    graph = model.graph
    half = TensorProto.FLOAT16

    def to_half(t):
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)

    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(to_half(init))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(to_half(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = half
    inputs = [i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT]
    outputs = [o.name for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    rename = {n: f"{n}__fp16" for n in inputs + outputs}
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    edges = [helper.make_node("Cast", [n], [rename[n]], to=half, name=f"{n}_to_fp16") for n in inputs]
    edges_out = [helper.make_node("Cast", [rename[n]], [n], to=TensorProto.FLOAT, name=f"{n}_to_fp32")
                 for n in outputs]
    nodes = edges + list(graph.node) + edges_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale FP32 types; shape inference recomputes them
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except Exception as e:
        raise ExportError(f"FP16 conversion of {src.name} produced an invalid graph: {e}") from e
    stamp(model, {**metadata_of(src), "precision": "fp16"})
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst
