"""Export: a checkpoint -> a verified bundle. The names of the export stage, each from the module
named for its role:

- pipeline: export_bundle (sequences the converters, gates, writes the manifest), input_spec,
  resolve_checkpoint;
- one converter per step (source2target): torch2onnx, onnx2int8, onnx2openvino (fp32 / fp16
  weights), openvino2int8, onnx2fp16, onnx2tensorrt, xgboost2c, build_engine;
- sampling (calibration crops), golden (golden tensors), gate (the INT8 accuracy gate), card
  (MODEL_CARD.md), record (figures recorded into a finished bundle).

Heavy libraries (torch, onnx, onnxruntime, openvino, nncf, tensorrt, xgboost) are imported inside
the functions, so importing this package stays cheap.
"""

from __future__ import annotations

from ..runtimes import check_checkout

check_checkout(__file__)

from .build_engine import build_engine
from .card import model_card
from .checkpoint import load_checkpoint
from .golden import N_GOLDEN, read_golden, write_golden
from .onnx2fp16 import onnx2fp16
from .onnx2int8 import onnx2int8
from .onnx2openvino import onnx2openvino
from .onnx2tensorrt import onnx2tensorrt
from .openvino2int8 import openvino2int8
from .pipeline import export_bundle, input_spec, producer, resolve_checkpoint
from .record import record_evaluation
from .sampling import CALIB_SIZE
from .torch2onnx import torch2onnx

__all__ = ["export_bundle", "record_evaluation", "load_checkpoint", "torch2onnx", "onnx2int8", "onnx2openvino",
           "openvino2int8", "onnx2fp16", "onnx2tensorrt", "build_engine", "write_golden", "read_golden",
           "model_card", "resolve_checkpoint", "input_spec", "producer", "CALIB_SIZE", "N_GOLDEN"]
