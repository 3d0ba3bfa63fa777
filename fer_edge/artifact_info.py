"""What an ONNX or OpenVINO IR file says about itself, read without ONNX or OpenVINO: the
`fer_edge` identity stamp the exporter wrote into it, and the names and shapes of the graph's
inputs and outputs. The loader checks these against the manifest on every open (a walk over the
file's top-level protobuf fields or its XML, milliseconds), so an edited manifest is refused
before it can relabel a model's outputs.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

Shape = tuple  # ints; -1 where a dimension is dynamic


class Unreadable(Exception):
    """The file is not the format its artifact entry claims (the backend says so when loading)."""


@dataclass
class GraphInfo:
    stamp: dict[str, str] = field(default_factory=dict)  # fer_edge metadata: manifest_sha256, labels, input...
    inputs: dict[str, Shape] = field(default_factory=dict)
    outputs: dict[str, Shape] = field(default_factory=dict)


def _readable(read):
    """A reader that raises Unreadable, with the reason, for a file that is not its format."""
    def reader(path: str | os.PathLike) -> GraphInfo:
        try:
            return read(path)
        except (IndexError, ValueError, ET.ParseError, UnicodeDecodeError) as e:
            raise Unreadable(f"{type(e).__name__}: {str(e)[:120]}") from None

    reader.__name__, reader.__doc__ = read.__name__, read.__doc__
    return reader


# --- ONNX: just enough protobuf to reach ModelProto.metadata_props and the graph's inputs/outputs --------------

def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview, start: int, end: int):
    """(field number, value): an int for varints, a (start, end) span for length-delimited fields."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield num, value
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > end:
                raise ValueError("field runs past its message")
            yield num, (i, i + n)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}: not a protobuf message")
    if i != end:
        raise ValueError("message ends inside a field")


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8")


LEGACY_STAMP = ("name", "version", "labels", "input", "manifest_sha256")  # written unprefixed by older exports


@_readable
def onnx_info(path: str | os.PathLike) -> GraphInfo:
    """An ONNX file's `fer_edge.*` metadata_props (keys without the prefix; an older export's
    unprefixed identity keys count where the prefixed one is absent) and its graph interface."""
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    info = GraphInfo()
    graph, props = None, []
    for num, value in _fields(buf, 0, len(buf)):
        if num == 7 and isinstance(value, tuple):  # ModelProto.graph
            graph = value
        elif num == 14 and isinstance(value, tuple):  # ModelProto.metadata_props
            props.append(value)
    metadata = _metadata(buf, props)
    info.stamp = {k: metadata[k] for k in LEGACY_STAMP if k in metadata}
    info.stamp.update({k[len("fer_edge."):]: v for k, v in metadata.items() if k.startswith("fer_edge.")})
    if graph is None:
        raise ValueError("no graph in the model")
    for num, value in _fields(buf, *graph):
        if num in (11, 12) and isinstance(value, tuple):  # GraphProto.input / output: ValueInfoProto
            name, shape = _value_info(buf, value)
            (info.inputs if num == 11 else info.outputs)[name] = shape
    return info


def _metadata(buf: memoryview, spans) -> dict[str, str]:
    """StringStringEntryProto spans -> {key: value}."""
    props = {}
    for span in spans:
        entry = {k: _text(buf, v) for k, v in _fields(buf, *span) if isinstance(v, tuple) and k in (1, 2)}
        if 1 in entry:
            props[entry[1]] = entry.get(2, "")
    return props


def _value_info(buf: memoryview, span: tuple[int, int]) -> tuple[str, Shape]:
    name, dims = "", []
    for num, value in _fields(buf, *span):
        if num == 1:
            name = _text(buf, value)
        elif num == 2:  # TypeProto -> tensor_type (1) -> shape (2) -> dim (1) -> dim_value (1) | dim_param (2)
            for n1, tensor in _fields(buf, *value):
                if n1 != 1:
                    continue
                for n2, shape in _fields(buf, *tensor):
                    if n2 != 2:
                        continue
                    for n3, dim in _fields(buf, *shape):
                        if n3 == 1:
                            d = dict(_fields(buf, *dim))
                            dims.append(d[1] if isinstance(d.get(1), int) else -1)
    return name, tuple(dims)


# --- OpenVINO IR: the XML holds the interface (port dims) and rt_info ------------------------------------------

@_readable
def openvino_info(path: str | os.PathLike) -> GraphInfo:
    """An OpenVINO IR's `fer_edge` rt_info (what onnx2openvino copied from the ONNX stamp) and its
    graph interface, from the XML alone."""
    info = GraphInfo()
    root = ET.parse(path).getroot()
    for layer in root.iter("layer"):
        kind = layer.get("type")
        for port in layer.iterfind("output/port"):
            names = [n.strip() for n in (port.get("names") or "").split(",") if n.strip()]
            shape = tuple(int(d.text) for d in port.iterfind("dim"))
            for n in names:
                (info.inputs if kind == "Parameter" else info.outputs)[n] = shape
    stamp = root.find("rt_info/fer_edge")
    if stamp is not None:
        info.stamp = {child.tag: child.get("value", "") for child in stamp}
    return info


# --- A sidecar JSON, for formats whose files hold neither names nor metadata (ncnn) ------------------------------

@_readable
def sidecar_info(path: str | os.PathLike) -> GraphInfo:
    """The stamp and graph interface from `<stem>.json` beside the artifact, written by its converter
    as {"fer_edge": {stamp}, "inputs": {name: {"shape": [...]}}, "outputs": {...}} (other keys are the
    backend's, e.g. ncnn's blob names: export/onnx2ncnn.py). A new format whose files cannot carry a
    stamp writes one too and needs no reader of its own."""
    from .errors import BundleError
    from .jsonfile import read_json

    side = os.path.splitext(path)[0] + ".json"
    try:
        data = read_json(side, error=BundleError)
        return GraphInfo(stamp={k: str(v) for k, v in (data.get("fer_edge") or {}).items()},
                         inputs={k: tuple(v["shape"]) for k, v in data["inputs"].items()},
                         outputs={k: tuple(v["shape"]) for k, v in data["outputs"].items()})
    except (FileNotFoundError, BundleError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"no readable sidecar {os.path.basename(side)}: {type(e).__name__}: {e}") from None
