"""The one consistency check of a bundle, run by the loader on every open and by `verify`: does the
manifest still describe the artifacts it lists? Each ONNX / OpenVINO artifact must carry this
manifest's identity digest (when it carries one), and its graph must take the manifest's input and
give as many logits as the manifest has labels; stored temperatures must be usable. Cheap: the
artifacts' own stamps and interfaces (fer_edge.artifact_info), never a run of the golden inputs.
"""

from __future__ import annotations

import json

from .artifact_info import Unreadable
from .formats import read_info
from .calibration import check_temperature
from .errors import InputError
from .manifest import identity_digest
from .preprocess import InputSpec


def check_bundle(bundle) -> list[str]:
    """Every way the manifest contradicts itself or its artifacts, in words; [] when consistent."""
    m = bundle.manifest
    problems = _temperature_problems(m.temperature)
    digest = identity_digest(m)
    for art in m.artifacts:
        try:
            path = bundle.file(art.path)
            info = read_info(path, art.format) if path.is_file() else None
        except (Unreadable, OSError):
            info = None  # not the format it claims: the backend refuses it on load, saying why
        if info is not None:
            problems += [f"artifact {art.key()}: {p}" for p in _artifact_problems(m, info, digest)]
    return problems


def _artifact_problems(m, info, digest: str) -> list[str]:
    stamped = info.stamp.get("manifest_sha256")
    if stamped is not None and stamped != digest:
        return [f"stamped with manifest identity {stamped[:12]}..., but this manifest's is {digest[:12]}...: "
                "its name, version, labels, input or model fields were edited, or the file belongs to another "
                "bundle (re-export instead of editing a manifest)"]
    out = []
    if stamped is None:  # an export older than the digest: its separate stamps still speak
        if "labels" in info.stamp and _json(info.stamp["labels"]) != m.labels:
            out.append(f"stamped labels {info.stamp['labels'][:80]} differ from the manifest's {m.labels}")
        spec = _json(info.stamp.get("input"))
        if isinstance(spec, dict):
            try:
                if InputSpec.from_dict(spec) != m.input:
                    out.append("stamped input spec differs from the manifest's")
            except (InputError, TypeError):
                out.append("stamped input spec is malformed")
    name = m.input.input_name
    if info.inputs and name not in info.inputs:
        out.append(f"the graph has no input {name!r} (it has {sorted(info.inputs)})")
    elif name in info.inputs:
        want = (1, *m.input.size)
        got = info.inputs[name][1:]
        if len(got) != 3 or any(g not in (-1, w) for g, w in zip(got, want)):
            out.append(f"the graph's input {name!r} is {_shape(info.inputs[name])}, the manifest's input spec "
                       f"says N x {want[0]} x {want[1]} x {want[2]}")
    outputs = m.model.get("outputs") or {}
    for role, want in (("logits", len(m.labels)), ("embedding", m.model.get("feature_dim"))):
        tensor = outputs.get(role)
        if tensor not in info.outputs:
            if info.outputs:
                out.append(f"the graph has no output {tensor!r} (model.outputs.{role})")
            continue
        last = info.outputs[tensor][-1] if info.outputs[tensor] else -1
        if isinstance(want, int) and last not in (-1, want):
            what = f"{len(m.labels)} labels" if role == "logits" else f"feature_dim {want}"
            out.append(f"the graph's {role} output has {last} values per crop, the manifest has {what}")
    return out


def _temperature_problems(entry) -> list[str]:
    if entry is None:
        return []
    if not isinstance(entry, dict):
        return [f"temperature must be an object, got {entry!r}"]
    values = {"temperature.value": entry.get("value")}
    by_tta = entry.get("by_tta") or {}
    if not isinstance(by_tta, dict):
        return ["temperature.by_tta must map each TTA mode to its temperature"]
    for mode, t in by_tta.items():
        values[f"temperature.by_tta.{mode}.value"] = t.get("value") if isinstance(t, dict) else t
    out = []
    for where, value in values.items():
        try:
            check_temperature(value)
        except InputError:
            out.append(f"{where} must be a positive finite number, got {value!r}")
    return out


def _json(text):
    try:
        return json.loads(text) if isinstance(text, str) and len(text) < 65536 else None
    except ValueError:
        return None


def _shape(shape) -> str:
    return " x ".join("N" if d == -1 else str(d) for d in shape)
