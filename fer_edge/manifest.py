"""The bundle manifest: the only thing a loader trusts about a model.

Schema version 1. Readers refuse versions newer than they know, and unknown top-level keys
are kept in `extra` (so a newer minor writer's extra fields survive a round trip) but never
interpreted: what the runtime reads has a field of its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import BundleError
from .formats import FORMATS, PRECISIONS
from .preprocess import InputSpec

FORMAT_NAME = "fer-edge-bundle"
SCHEMA_VERSION = 1
IDENTITY_FIELDS = ("name", "version", "labels", "input", "model")


def identity_digest(manifest: Any) -> str:
    """sha256 of the canonical JSON of the manifest's identity fields (name, version, labels, input,
    model). Not of the whole manifest: that lists the artifacts' own hashes, which would make the
    digest stamped into an artifact depend on the artifact itself."""
    d = manifest.to_dict() if hasattr(manifest, "to_dict") else dict(manifest)
    ident = {k: d.get(k) for k in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    format: str  # a key of formats.FORMATS
    precision: str
    path: str  # relative to the bundle root; its hash is in Manifest.files

    def key(self) -> str:
        return f"{self.format}/{self.precision}"


@dataclass
class Manifest:
    name: str
    labels: list[str]
    input: InputSpec
    model: dict[str, Any]  # arch, params, feature_dim, outputs {logits, embedding}
    artifacts: list[Artifact]
    files: dict[str, dict[str, Any]]  # relpath -> {"sha256", "bytes"}: every file the bundle holds
    version: str = "0"
    created: str = ""
    description: str = ""
    head: dict[str, Any] = field(default_factory=lambda: {"kind": "in_graph", "output": "logits"})
    # Extra heads on the embedding, by name ("xgboost", "linear"): see docs/architecture.md.
    # `head` above is the default; {"kind": "in_graph"} (softmax of the graph's logits) is always available.
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    golden: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    # The fitted temperature the runtime serves (calibration.manifest_temperature); None: not fitted.
    # Absent from the JSON when None, as in manifests written before it was a field.
    temperature: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys from a newer minor writer

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"] = self.input.to_dict()
        extra = d.pop("extra")
        if d["temperature"] is None:
            del d["temperature"]
        return {**extra, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def artifact(self, format: str, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.format == format and a.precision == precision), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "manifest.json") -> "Manifest":
        if not isinstance(d, dict):
            raise BundleError(f"{where}: expected a JSON object")
        if d.get("format") != FORMAT_NAME:
            raise BundleError(f"{where}: not a fer-edge bundle manifest (format={d.get('format')!r})")
        version = d.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"{where}: schema_version missing or not an integer")
        if version < 1:
            raise BundleError(f"{where}: schema_version {version} is not a version any fer_edge wrote (1..{SCHEMA_VERSION})")
        if version > SCHEMA_VERSION:
            raise BundleError(
                f"{where}: schema_version {version} is newer than this fer_edge understands "
                f"({SCHEMA_VERSION}); upgrade fer-edge to open this bundle"
            )
        required = ("name", "labels", "input", "model", "artifacts", "files")
        missing = [k for k in required if k not in d]
        if missing:
            raise BundleError(f"{where}: missing required fields {missing}")
        try:
            spec = InputSpec.from_dict(d["input"])
        except Exception as e:
            raise BundleError(f"{where}: bad input spec: {e}") from e
        files = d["files"]
        if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
            raise BundleError(f"{where}: files must map each path to {{'sha256': ..., 'bytes': ...}}")
        if not isinstance(d["artifacts"], list) or not isinstance(d["name"], str):
            raise BundleError(f"{where}: name must be a string and artifacts a list")
        artifacts = []
        for a in d["artifacts"]:
            try:
                art = Artifact(format=a["format"], precision=a["precision"], path=a["path"])
            except (KeyError, TypeError) as e:
                raise BundleError(f"{where}: artifact entry {a!r} needs format, precision and path") from e
            if art.format not in FORMATS or art.precision not in PRECISIONS:
                raise BundleError(f"{where}: artifact {art.key()} has an unknown format or precision")
            if art.path not in d["files"]:
                raise BundleError(f"{where}: artifact {art.key()} path {art.path!r} is not listed in files")
            artifacts.append(art)
        outputs = d["model"].get("outputs") if isinstance(d["model"], dict) else None
        if not (isinstance(outputs, dict) and {"logits", "embedding"} <= set(outputs)):
            raise BundleError(f"{where}: model.outputs must name the graph's 'logits' and 'embedding' outputs")
        labels = d["labels"]
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise BundleError(f"{where}: labels must be a non-empty list of strings")
        if len(set(labels)) != len(labels):
            raise BundleError(f"{where}: labels repeat ({labels}); each class needs its own name")
        heads = d.get("heads", {})
        if not isinstance(heads, dict) or not all(isinstance(h, dict) and "kind" in h for h in heads.values()):
            raise BundleError(f"{where}: heads must map each head name to an object with a 'kind'")
        for hname, h in heads.items():
            for key in ("model", "weights"):
                if key in h and h[key] not in files:
                    raise BundleError(f"{where}: head {hname!r} {key} {h[key]!r} is not listed in files")
        known = set(cls.__dataclass_fields__) - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs.update(input=spec, artifacts=artifacts)
        return cls(**kwargs, extra={k: v for k, v in d.items() if k not in known})
