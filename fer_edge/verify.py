"""`verify(bundle)`: prove a bundle still computes what its exporter computed, on this machine.

Checks, each reported as passed, failed or skipped (with the reason):
- files: the sha256 of every file the manifest lists; files the manifest does not list;
- manifest: the loader's consistency check (fer_edge.bundle_check: stamps, graph interface, labels,
  temperatures), so verify never passes a bundle the loader refuses;
- every backbone artifact: its stamped identity (the ONNX metadata / OpenVINO rt_info digest must
  be this manifest's `identity_digest`), then the golden inputs run through it: FP32 within the
  golden tolerance of the torch outputs, FP16/INT8 by top-1 agreement and embedding cosine against
  the thresholds recorded per artifact at export;
- every head: its outputs on the golden embeddings against those recorded at export (for the
  compiled tree head, XGBoost's own outputs), within the recorded tolerance.
An artifact whose backend cannot run here (TensorRT without a GPU, an engine of another GPU) is
"skipped", never "passed". Only numpy at import; runtimes are loaded by the checks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import BundleError, FerEdgeError
from .manifest import IDENTITY_FIELDS, identity_digest  # noqa: F401  (identity_digest: public here too)
from .parity import TOLERANCE_KEYS, compare, isa_family, tolerance_for
from .parity import problems as parity_problems

DIGEST_KEY = "manifest_sha256"  # ONNX metadata_props `fer_edge.manifest_sha256`, OV rt_info fer_edge/manifest_sha256
STATUSES = ("passed", "failed", "skipped")


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class VerifyReport:
    bundle: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "failed"]

    def add(self, name: str, status: str, detail: str = "", **figures: Any) -> Check:
        assert status in STATUSES, status
        check = Check(name, status, detail, figures)
        self.checks.append(check)
        return check

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def lines(self) -> list[str]:
        out = [f"{c.status.upper():8s} {c.name}: {c.detail}" for c in self.checks]
        counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        out.append(f"{'OK' if self.ok else 'FAILED'}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
        return out


def verify(bundle: Any) -> VerifyReport:
    """Verify a bundle (folder, zip, packaged name, or an opened Bundle). Raises BundleError only when
    the manifest itself cannot be read; everything else is a check in the report."""
    from .bundle import Bundle

    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle, verify=False)
    report = VerifyReport(str(bundle.source))
    _check_files(bundle, report)
    _check_manifest(bundle, report)
    golden = _golden(bundle, report)
    digest = identity_digest(bundle.manifest)
    for art in bundle.manifest.artifacts:
        _check_artifact(bundle, art, golden, digest, report)
    for name, head in bundle.manifest.heads.items():
        _check_head(bundle, name, head, golden, report)
    return report


def _check_files(bundle, report: VerifyReport) -> None:
    from .bundle import MANIFEST, sha256_file

    problems = []
    for rel, entry in bundle.manifest.files.items():
        try:
            path = bundle.file(rel)
        except BundleError as e:
            problems.append(str(e))
            continue
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{rel} was altered (sha256 differs from the manifest)")
    listed = set(bundle.manifest.files)
    extra = sorted(p.relative_to(bundle.root).as_posix() for p in bundle.root.rglob("*")
                   if p.is_file() and p.name != MANIFEST and p.relative_to(bundle.root).as_posix() not in listed)
    problems += [f"{rel} is not listed in the manifest" for rel in extra]
    n = len(bundle.manifest.files)
    if problems:
        report.add("files", "failed", "; ".join(problems), files=n)
    else:
        report.add("files", "passed", f"{n} files match their sha256", files=n)


def _check_manifest(bundle, report: VerifyReport) -> None:
    """The loader's own consistency check (fer_edge.bundle_check): what it refuses, verify fails."""
    from .bundle_check import check_bundle

    problems = check_bundle(bundle)
    if problems:
        report.add("manifest", "failed", "; ".join(problems))
    else:
        report.add("manifest", "passed", "labels, input spec, identity stamps and temperatures agree with the "
                                         "artifacts (the check the loader runs on every open)")


def _golden(bundle, report: VerifyReport) -> dict[str, np.ndarray] | None:
    files = (bundle.manifest.golden or {}).get("files") or {}
    if not files:
        report.add("golden", "failed", "the manifest lists no golden tensors: nothing to verify artifacts against")
        return None
    try:
        return {k: np.load(bundle.file(rel), allow_pickle=False) for k, rel in files.items()}
    except (OSError, ValueError, BundleError) as e:
        report.add("golden", "failed", f"unreadable golden tensors: {e}")
        return None


def _tolerance(bundle, key: str, precision: str) -> tuple[dict[str, float], str]:
    """The tolerance for this machine's CPU class, and where it comes from (for the report)."""
    g = bundle.manifest.golden or {}
    cls = isa_family()
    stated = key in (((g.get("cpu_classes") or {}).get(cls) or {}).get("thresholds") or {}) and precision != "fp32"
    return tolerance_for(g, key, precision, cls), (f"{cls} tolerance" if stated else f"export tolerance, on {cls}")


STAMP_FIELDS = ("name", "version", "labels", "input")  # identity fields an artifact may carry besides the digest


def _stamp(path, fmt: str) -> tuple[dict[str, str] | None, str]:
    """(the fer_edge fields stamped in the file, or None when it carries none or they cannot be read;
    where they live), through the format's one stamp reader (formats.FORMATS[fmt].info)."""
    from .artifact_info import Unreadable
    from .formats import get_format

    try:
        info = get_format(fmt).read_info(path)
    except (Unreadable, OSError) as e:  # a corrupt file: the run check below reports it too
        return None, f"unreadable metadata ({str(e)[:120]})"
    if info is None:
        return None, f"{fmt} files carry no metadata"
    return {k: v for k, v in info.stamp.items() if k in (*STAMP_FIELDS, DIGEST_KEY)}, f"{fmt} metadata"


def _identity(bundle, fields: dict[str, str] | None, how: str) -> tuple[str, list[str]]:
    """What the artifact's stamp says, in words, and the stamped fields that contradict the manifest."""
    if fields is None:
        return f"identity not checked: {how}", []
    m = bundle.manifest.to_dict()
    want = {"name": m.get("name"), "version": str(m.get("version")), "labels": m.get("labels"), "input": m.get("input")}
    present = [k for k in STAMP_FIELDS if k in fields]
    wrong = []
    for k in present:
        value = fields[k]
        if k in ("labels", "input"):
            try:
                value = json.loads(value)
                if k == "input":  # through InputSpec, so a field added since (with its default) still matches
                    from .preprocess import InputSpec

                    value = InputSpec.from_dict(value).to_dict()
            except (ValueError, TypeError):
                pass
        if value != want[k]:
            wrong.append(f"stamped {k} {fields[k][:60]!r} differs from the manifest's")
    if DIGEST_KEY in fields:
        return f"identity stamped in {how} (manifest digest" + (f", {', '.join(present)})" if present else ")"), wrong
    if present:
        return (f"{how} carries {', '.join(present).replace('input', 'input spec')}, matching the manifest, but no "
                "manifest digest (an export older than the digest; `fer-edge export` stamps it)"), wrong
    return f"no identity in {how}: labels and input spec come from the manifest alone", wrong


def _skip_reason(art) -> str | None:
    """Why this artifact's backend cannot run here, or None."""
    from .formats import FORMATS, device_key_of
    from .runtimes import BACKENDS

    fmt = FORMATS[art.format]
    cls = BACKENDS.get(fmt.backend)
    if cls is None:
        return f"no backend {fmt.backend!r} is registered in this fer_edge"
    probe = cls.probe()
    if not probe.usable:
        return probe.reason
    if fmt.built_on_device:
        from .formats import device_key
        from .runtimes.cuda_probe import cuda_devices

        here = {device_key(d.compute_capability, probe.version or "?") for d in cuda_devices()}
        if device_key_of(art.path) not in here:
            return f"engine built for {device_key_of(art.path)}; this machine is {sorted(here) or 'no GPU'}"
    return None


def _check_artifact(bundle, art, golden, digest: str, report: VerifyReport) -> None:
    from .formats import FORMATS

    name = f"artifact {art.key()}" + (f" ({art.path})" if FORMATS[art.format].built_on_device else "")
    path = bundle.file(art.path)
    if not path.is_file():
        report.add(name, "failed", f"{art.path} is missing")
        return
    fields, how = _stamp(path, art.format)
    stamped = (fields or {}).get(DIGEST_KEY)
    if stamped is not None and stamped != digest:
        report.add(name, "failed", f"{how} names manifest digest {stamped[:12]}..., this manifest is {digest[:12]}...: "
                                   "the file belongs to another bundle")
        return
    identity, contradictions = _identity(bundle, fields, how)
    if contradictions:
        report.add(name, "failed", "; ".join(contradictions) + ": the file belongs to another bundle")
        return
    skip = _skip_reason(art)
    if skip:
        report.add(name, "skipped", f"{skip} ({identity})")
        return
    if golden is None:
        report.add(name, "skipped", "no golden tensors")
        return
    from .runtimes import select_backend

    try:
        sel = select_backend(bundle, FORMATS[art.format].backend, precision=art.precision)
        out = sel.backend.run(golden["input"])
    except FerEdgeError as e:
        report.add(name, "failed", f"cannot run: {e}")
        return
    # The same measure and limits as the exporter's parity.check, reported rather than raised.
    m = compare(golden, out)
    tol, source = _tolerance(bundle, art.key(), art.precision)
    problems = parity_problems(m, tol, golden)
    if not any(k in tol for k in TOLERANCE_KEYS):
        problems.append(f"the manifest records no tolerance for {art.key()}")
    summary = (f"max |diff| {m['max_abs_diff']:.2g}, top-1 agreement {m['top1_agreement']:.3f}, "
               f"min embedding cosine {m['min_embedding_cosine']:.4f} on {len(golden['input'])} golden inputs "
               f"via {sel.name} ({source}); {identity}")
    report.add(name, "failed" if problems else "passed", "; ".join(problems) + (" -- " if problems else "") + summary,
               **m, tolerance=tol)


def _check_head(bundle, name: str, head: dict[str, Any], golden, report: VerifyReport) -> None:
    check = f"head {name} ({head.get('kind')})"
    expected_rel = ((bundle.manifest.golden or {}).get("heads") or {}).get(name)
    if golden is None or not expected_rel:
        report.add(check, "failed", "no golden outputs recorded for this head at export")
        return
    try:
        from .runtimes.head_build import platform_tag
        from .runtimes.heads import load_head
    except ImportError as e:
        report.add(check, "skipped", f"this fer_edge has no head runtime ({e})")
        return
    try:
        expected = np.load(bundle.file(expected_rel), allow_pickle=False)
        probs = np.asarray(load_head(bundle, name)(golden["embedding"], golden["logits"]))
    except (FerEdgeError, OSError, ValueError) as e:
        libraries = head.get("libraries")
        if isinstance(e, BundleError) and libraries is not None and platform_tag() not in libraries:
            # No library for this machine in the bundle (nor built into the cache): cannot run here.
            report.add(check, "skipped", str(e))
        else:
            report.add(check, "failed", f"cannot run: {e}")
        return
    tol = float(((bundle.manifest.golden or {}).get("head_atol") or {}).get(name, 1e-5))
    if probs.shape != expected.shape:
        report.add(check, "failed", f"outputs have shape {probs.shape}, golden {expected.shape}")
        return
    diff = float(np.max(np.abs(probs - expected)))
    ok = diff <= tol
    report.add(check, "passed" if ok else "failed",
               f"max |diff| {diff:.2g} {'<=' if ok else '>'} {tol:g} vs the outputs recorded at export "
               f"on {len(expected)} golden embeddings", max_abs_diff=diff, atol=tol)

