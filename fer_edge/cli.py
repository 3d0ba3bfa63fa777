"""`fer-edge`: a thin skin over the Python API. Each subcommand calls one public function."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Sequence

from ._version import __version__
from .errors import BundleError, FerEdgeError, RuntimeUnavailableError, install_hint
from .tta import TTA_MODES

EXIT_CODES = {BundleError: 3, RuntimeUnavailableError: 4}
# Modules only an optional extra installs -> that extra (a missing one is exit 4, like a backend)
OPTIONAL_MODULES = {"torch": "train", "torchvision": "train", "sklearn": "train", "matplotlib": "train",
                    "safetensors": "train", "tqdm": "train", "xgboost": "train", "onnx": "export",
                    "onnxscript": "export", "onnxsim": "export", "nncf": "export", "treelite": "export",
                    "tl2cgen": "export", "cv2": "video"}
DEVICE_HELP = ("cpu, cuda[:N] (gpu[:N] says the same; for openvino it is its GPU plugin) or a backend's own name "
               "(onnxruntime tensorrt[:N]; openvino NPU, AUTO); default: a CUDA GPU where the backend can use one, "
               "else the CPU")
COMMAND_EXTRAS = {"export": "export", "build-head": "export", "build-engine": "export,tensorrt"}


def _recognizer(args: argparse.Namespace):
    from .recognizer import Recognizer

    return Recognizer(args.model, args.backend, precision=args.precision, threads=args.threads,
                      head=getattr(args, "head", "auto"), device=getattr(args, "device", None),
                      strict=getattr(args, "strict", False), refresh=getattr(args, "refresh", False),
                      tta=getattr(args, "tta", "none"))


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"fer_edge {data['fer_edge']} (python {data['python']}, numpy {data['numpy']})")
    print(f"cpu: {data['cpu']}")
    cuda = data["cuda"]
    print("cuda: " + (", ".join(f"cuda:{d['index']} {d['name']} ({d['sm']})" for d in cuda["devices"])
                      or f"no device ({cuda['reason']})"))
    print("backends:")
    for name, b in data["backends"].items():
        print(f"  {name:12s} {'usable' if b['usable'] else 'not usable':10s} {b['reason']}"
              + ("" if b["usable"] else f"  ({install_hint(b['extra'])})"))
        for key in ("providers", "device_names"):
            if b.get(key):
                print(f"  {'':12s} {key}: {b[key]}")
    print(f"auto: {data['auto']}")
    print(f"fixed order: {', '.join(data['auto_order'])} ({data['auto_reason']})")
    print(f"default model: {data['default_model']}; packaged models: {', '.join(data['packaged_models']) or 'none'}")
    for name, m in data["models"].items():
        print(f"  {name}: {m}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .data import read_image

    rec = _recognizer(args)
    # Each file on its own: one bad file is reported (on stderr) and the good ones still predicted.
    paths, images, failed = [], [], 0
    for path in args.images:
        try:
            image = read_image(path, check=not args.allow_corrupt)
            rec.preprocess([image], names=[path])  # refuses what the model cannot use, naming the file
        except FerEdgeError as e:
            print(f"fer-edge predict: error: {e}", file=sys.stderr)
            failed += 1
            continue
        paths.append(path)
        images.append(image)
    preds = rec.predict_batch(images, names=paths) if images else []
    if args.json:
        print(json.dumps({"model": rec.describe(),
                          "predictions": [{"image": p, **pred.as_dict()} for p, pred in zip(paths, preds)]},
                         indent=2))
    else:
        for path, pred in zip(paths, preds):
            print(f"{path}\t{pred.label}\t{pred.score:.3f}")
        print(f"# {rec.backend} {rec.precision}", file=sys.stderr)
    if failed:
        print(f"fer-edge predict: {failed} of {len(args.images)} images could not be predicted", file=sys.stderr)
        return 1
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_matrix

    from .errors import InputError

    if args.checkpoint:
        from .train.report import evaluate_checkpoint, public

        if args.model or args.record:
            raise InputError("--checkpoint evaluates a torch checkpoint; it cannot be combined with --model or --record")
        result = public(evaluate_checkpoint(args.checkpoint, args.data, args.split, tta=args.tta,
                                            threads=args.threads, limit_per_class=args.limit_per_class,
                                            plots=args.plots))
    elif args.plots:
        raise InputError("--plots needs --checkpoint (a bundle is evaluated without plots)")
    else:
        result = evaluate_matrix(args.model, args.data, args.split, backends=args.backend, precisions=args.precision,
                                 threads=args.threads, limit_per_class=args.limit_per_class, tta=args.tta)
    for key, r in result["runs"].items():
        print(f"== {result['model']} on {args.data} [{args.split}] with {key}: {r['n']} images, {r['seconds']:.1f} s")
        print(f"accuracy {r['accuracy'] * 100:.2f} %   macro precision {r['macro_precision'] * 100:.2f} %   "
              f"macro recall {r['macro_recall'] * 100:.2f} %   macro F1 {r['macro_f1'] * 100:.2f} %")
        print("per-class recall: " + "  ".join(f"{c} {v['recall'] * 100:.1f}" for c, v in r["per_class"].items()))
        if r.get("ece") is not None:
            print(f"tta {r.get('tta', 'none')}   ECE (15 bins) {r['ece']:.4f} at temperature {r['temperature']:g}"
                  f" ({r['ece_uncalibrated']:.4f} uncalibrated)")
        if r.get("macro_auc") is not None:
            print(f"one-vs-rest AUC: macro {r['macro_auc']:.4f}   " + "  ".join(
                f"{c} {a:.3f}" for c, a in r["auc"].items() if a is not None))
        labels = r["labels"]
        print("confusion matrix (rows true, columns predicted):")
        print("          " + " ".join(f"{c[:8]:>8s}" for c in labels))
        for c, row in zip(labels, r["confusion_matrix"]):
            print(f"{c[:8]:>8s}  " + " ".join(f"{v:8d}" for v in row))
    for key, value in result["agreement"].items():
        print(f"top-1 agreement {key}: {value * 100:.2f} %")
    vs = result.get("vs_recorded")
    if vs:
        print(f"against the bundle's recorded figures (taken on {vs['cpu']}; tolerance across x86 CPUs in "
              "fer_edge.evaluate.CROSS_CPU_TOLERANCE):")
        for key, metrics in vs["runs"].items():
            print(f"  {key}: " + "   ".join(
                f"{name} {m['measured'] * 100:.2f} % vs {m['recorded'] * 100:.2f} % ({m['delta'] * 100:+.2f} pp, "
                f"{'within' if m['within'] else 'OUTSIDE'} +-{m['tolerance'] * 100:.2f})" for name, m in metrics.items()))
        print("  " + ("all within tolerance" if vs["within"] else "SOME FIGURES ARE OUTSIDE THE CROSS-CPU TOLERANCE"))
    for path in result.get("plots", []):
        print(f"wrote {path}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    if args.record:
        from .export import record_evaluation

        key = record_evaluation(args.model, result, command=_command_line(args))
        print(f"recorded as evaluation[{key!r}] in {args.model}/manifest.json and MODEL_CARD.md")
    return 0


def _cmd_fit_head(args: argparse.Namespace) -> int:
    from .train.head_fitting import fit_head

    meta = fit_head(args.checkpoint, args.kind, args.data, out=args.out, search=args.search, params=args.params,
                    limit_per_class=args.limit_per_class, test=args.test, n_jobs=args.n_jobs, seed=args.seed,
                    threads=args.threads, command=_command_line(args), log=_stderr)
    for split in ("val", "test"):
        if split in meta:
            r = meta[split]
            print(f"{meta['kind']} head [{split}]: accuracy {r['accuracy'] * 100:.2f} %   macro F1 "
                  f"{r['macro_f1'] * 100:.2f} %   macro AUC {r['macro_auc']:.4f}   ({r['n']} images)")
    print(f"params: {json.dumps(meta['params'])}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .train.report import make_report

    result = make_report(args.run, args.data, args.split, tta=args.tta, out=args.out,
                         limit_per_class=args.limit_per_class, threads=args.threads, command=_command_line(args))
    for key, r in result["runs"].items():
        print(f"{key:24s} accuracy {r['accuracy'] * 100:.2f} %   macro F1 {r['macro_f1'] * 100:.2f} %   "
              f"macro AUC {r['macro_auc']:.4f}")
    for name, h in result["heads"].items():
        figures = h.get(args.split) or (h.get("recorded") or {}).get("test")
        shown = (f"accuracy {figures['accuracy'] * 100:.2f} %   macro F1 {figures['macro_f1'] * 100:.2f} %"
                 if figures else "no figures on this split (research-only head, fitted without --test)")
        print(f"{'head ' + name:24s} {shown}   (val accuracy {(h.get('val') or {}).get('accuracy', float('nan')) * 100:.2f} %)")
    if result["best_head"]:
        print(f"best head by val accuracy: {result['best_head']['name']} ({result['best_head']['val_accuracy'] * 100:.2f} %)")
    print(f"wrote {result['report_json']} and {len(result.get('plots', []))} plots")
    return 0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    rows, rec = demo(args.model, args.backend, precision=args.precision, threads=args.threads)
    d = rec.describe()
    print(f"model {d['model']} on {d['backend']} ({d['precision']}, threads {d.get('threads')}): {d['reason']}")
    print(f"{'image':42s} {'expected':9s} {'predicted':9s} {'score':>6s} {'ms/crop':>8s}")
    for r in rows:
        print(f"{r['image']:42s} {r['expected']:9s} {r['label']:9s} {r['score']:6.3f} {r['ms']:8.3f}")
    hits = sum(r["expected"] == r["label"] for r in rows)
    print(f"{hits}/{len(rows)} sample faces match their folder label (the model's test accuracy is in its card)")
    return 0


def _cmd_build_head(args: argparse.Namespace) -> int:
    from .runtimes.heads import build_head

    path = build_head(args.bundle, args.head, jobs=args.jobs)
    print(f"built head {args.head!r} of {args.bundle} for this machine: {path} (cached; load_head finds it)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_bundle

    out = export_bundle(args.checkpoint, args.out, name=args.name or os.path.basename(os.path.normpath(args.out)),
                        targets=tuple(args.targets.split(",")), precisions=tuple(args.precision.split(",")),
                        artifacts=tuple(args.artifacts.split(",")) if args.artifacts else None,
                        trained_on=args.trained_on, train_minutes=args.train_minutes,
                        calib=args.calib, val=args.val, max_drop_pp=args.max_drop, max_f1_drop_pp=args.max_f1_drop,
                        allow_drop=args.allow_drop, head=args.head, head_path=args.head_path,
                        default_head=args.default_head, max_batch=args.max_batch,
                        description=args.description or "", commands=_export_commands(args), overwrite=args.overwrite)
    from .bundle import Bundle

    m = Bundle.open(out).manifest
    print(f"wrote bundle {out}: " + ", ".join(a.key() for a in m.artifacts)
          + (f"; heads: {', '.join(m.heads)}" if m.heads else ""))
    for key, v in (m.evaluation.get("val") or {}).items():
        print(f"  val {key}: accuracy {v['accuracy']:.2%}, macro-F1 {v['macro_f1']:.3f}")
    gate = m.evaluation.get("accuracy_gate") or {}
    print(f"  accuracy gate: {gate.get('status')}")
    for key, why in (gate.get("left_out") or {}).items():
        print(f"  LEFT OUT {key}: {why}")
    if m.temperature:
        t = m.temperature
        print(f"  temperature {t['value']:g} (val ECE {t['val_ece']['before']:.4f} -> {t['val_ece']['after']:.4f})")
        for mode, tm in (t.get("by_tta") or {}).items():
            print(f"  temperature with tta {mode}: {tm['value']:g} (val ECE {tm['val_ece']['before']:.4f} -> "
                  f"{tm['val_ece']['after']:.4f})")
    if m.evaluation.get("default_head"):
        print(f"  default head: {m.evaluation['default_head']['reason']}")
    for note in m.extra.get("export", {}).get("warnings", []):
        print(f"  WARNING: {note}")
    return 0


def _cmd_add_ncnn(args: argparse.Namespace) -> int:
    from .export.add_ncnn import add_ncnn

    got = add_ncnn(args.bundle, val=args.val, precision=args.precision, command=_command_line(args),
                   threads=args.threads)
    print(f"added ncnn/{args.precision} to {args.bundle}: val accuracy {got['val']['accuracy']:.2%} "
          f"({got['drop_pp']:+.2f} pp below onnx/fp32), golden top-1 agreement {got['golden']['top1_agreement']:.3f}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify

    report = verify(args.bundle)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 5


def _cmd_build_engine(args: argparse.Namespace) -> int:
    from .export import build_engine

    from .runtimes.devices import cuda_index

    for path in build_engine(args.bundle, precisions=tuple(args.precision.split(",")), max_batch=args.max_batch,
                             device=cuda_index(args.device, backend="build-engine")):
        print(f"built {path}")
    return 0


def _export_commands(args: argparse.Namespace) -> dict[str, str]:
    commands = {"export": _command_line(args)}
    if args.train_command:
        commands["train"] = args.train_command
    return commands


def _cmd_train(args: argparse.Namespace) -> int:
    from .train.config import TrainConfig, list_recipes, load_recipe, parse_overrides, recipe_description
    from .train.distributed import detect
    from .train.loop import train

    if args.list_recipes:
        for name in list_recipes():
            print(f"{name:28s} {recipe_description(name)}")
        return 0
    cfg = load_recipe(args.recipe) if args.recipe else TrainConfig()
    flags = dict(arch=args.arch, data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                 lr=args.lr, device=args.device, threads=args.threads, limit_per_class=args.limit_per_class,
                 seed=args.seed, loss=args.loss, pretrained=args.pretrained, regime=args.regime,
                 distill_teacher=args.teacher, tta=args.tta, amp=args.amp, compile=args.compile,
                 time_budget_min=args.time_budget)
    # One override, so options that only make sense together (regime + transfer_epochs) can come
    # from --set and flags at once.
    cfg = cfg.override(**parse_overrides(args.set or []), **{k: v for k, v in flags.items() if v is not None})
    best = train(cfg, resume=args.resume, command=_command_line(args))
    if detect().is_main:
        print(json.dumps(best))
    return 0


def _video_default(name: str):  # the CLI's defaults are the API's
    from .video import VideoConfig

    return VideoConfig.__dataclass_fields__[name].default


def _cmd_video(args: argparse.Namespace) -> int:
    from .video import VideoConfig, run_video

    cfg = VideoConfig(detector=args.detector, margin=args.margin, align=not args.no_align, smoothing=args.smooth,
                      max_frames=args.max_frames, detect_every=args.detect_every,
                      redetect_below=args.redetect_below, min_face=args.min_face)

    def on_frame(record: dict) -> None:
        if args.json:
            print(json.dumps(record), flush=True)
        elif record["faces"]:
            print(f"{record['source']}: " + "  ".join(
                f"#{f['track']} {f['smoothed']['label']} {f['smoothed']['score']:.2f}" for f in record["faces"]))

    summary = run_video(args.input, _recognizer(args), config=cfg, out=args.out, on_frame=on_frame)
    if args.json:
        print(json.dumps({"summary": summary}))
    print(f"{summary['frames']} frames, {summary['faces']} faces, {summary['tracks']} tracks; {summary['fps']} fps "
          f"(detect {summary['ms_per_frame']['detect']:.1f} ms + recognise {summary['ms_per_frame']['recognize']:.1f} "
          f"ms per frame; {summary['detector']['detector']} on {summary['frames_detected']} frames, "
          f"{summary['backend']} {summary['precision']})"
          + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr if args.json else sys.stdout)
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from .profile import ProfileConfig, format_table, plot, profile

    def names(value: str):
        return value if value in ("auto", "all") else tuple(value.split(","))

    def ints(value: str, flag: str) -> tuple[int, ...]:
        try:
            return tuple(int(v) for v in value.split(","))
        except ValueError:
            raise InputError(f"{flag} takes a comma list of integers, got {value!r}") from None

    from .errors import InputError

    if args.models:  # models side by side: ms per crop beside each one's recorded accuracy
        from .profile import compare_models, format_models_table

        if args.backends == "all":  # --precision's default, all, means each model's served precision here
            raise InputError("--models compares the one pair each model serves: --backends takes auto or one name")
        result = compare_models(tuple(args.models.split(",")), backend=args.backends,
                                precision="auto" if args.precision == "all" else args.precision,
                                threads=ints(args.threads, "--threads"), runs=args.runs, warmup=args.warmup,
                                progress=lambda r: _stderr(f"profiled {r['model']} threads {r['threads']}"))
        _show_profile(result, format_models_table, args)
        return 0
    cfg = ProfileConfig(backends=names(args.backends), precisions=names(args.precision), heads=names(args.heads),
                        batches=ints(args.batch, "--batch"), threads=ints(args.threads, "--threads"), runs=args.runs,
                        warmup=args.warmup, detection=not args.no_detection, tta=args.tta)
    result = profile(args.bundle, cfg, progress=lambda r: _stderr(
        f"profiled {r['stage']} {r['backend']} {r['precision'] or ''} batch {r['batch']} threads {r['threads']}"))
    _show_profile(result, format_table, args)
    if args.plot:
        print(f"wrote {plot(result, args.plot)}")
    return 0


def _show_profile(result: dict, fmt, args: argparse.Namespace) -> None:
    """Record the command, print the table and write the JSON a profile run asked for."""
    result["command"] = _command_line(args)
    print(fmt(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


def _add_model_args(p: argparse.ArgumentParser, *, multi: bool = False) -> None:
    p.add_argument("--model", help="bundle folder or zip, or a packaged model name (default: the packaged default)")
    if multi:
        p.add_argument("--backend", default="auto", help="auto, a backend name, a comma list, or 'all'")
        p.add_argument("--precision", default="auto", help="auto, fp32, int8, a comma list, or 'all'")
    else:
        p.add_argument("--backend", default="auto",
                       help="auto (default), fastest (timed here, cached), or a name: onnxruntime, openvino, tensorrt, ncnn")
        p.add_argument("--precision", default="auto", help="auto (INT8 where shipped), fp32 or int8")
    p.add_argument("--threads", type=int, help="fix the backend's thread count")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-edge", description="Facial expression recognition for the edge.")
    p.add_argument("--version", action="version", version=f"fer-edge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    i = sub.add_parser("info", help="version, installed backends, devices, packaged models")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_info)

    pr = sub.add_parser("predict", help="predict the expression of face-crop images")
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    _add_model_args(pr)
    pr.add_argument("--json", action="store_true", help="print JSON with all probabilities")
    pr.add_argument("--allow-corrupt", action="store_true",
                    help="predict JPEGs whose image data is damaged (refused by default: the decoder returns a garbled face)")
    pr.add_argument("--head", default="auto", help="auto (the bundle's default), in_graph, or a head it ships")
    pr.add_argument("--device", help=DEVICE_HELP)
    pr.add_argument("--strict", action="store_true", help="auto/fastest: fail instead of trying the next backend")
    pr.add_argument("--refresh", action="store_true", help="--backend fastest: re-time instead of using the cache")
    pr.add_argument("--tta", default="none", choices=TTA_MODES,
                    help="test-time augmentation: average the probabilities of 2 (flip) or 10 (ten_crop) views")
    pr.set_defaults(func=_cmd_predict)

    ev = sub.add_parser("evaluate", help="accuracy, macro P/R/F1, per-class recall and confusion matrix of a bundle")
    _add_model_args(ev, multi=True)
    ev.add_argument("--data", required=True, help="ImageFolder root with split folders, a class-folder tree, or fer2013.csv")
    ev.add_argument("--split", default="test", help="split folder or CSV Usage (train/val/test); default test")
    ev.add_argument("--limit-per-class", type=int, help="first N images per class (quick checks)")
    ev.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    ev.add_argument("--record", action="store_true",
                    help="store the figures in the bundle's manifest and model card (a bundle folder)")
    ev.add_argument("--checkpoint", help="evaluate a torch checkpoint (e.g. runs/x/best.pt) instead of a bundle")
    ev.add_argument("--tta", default="none", choices=TTA_MODES,
                    help="test-time augmentation (a bundle: the Recognizer's; --checkpoint: also evaluate with it)")
    ev.add_argument("--plots", metavar="DIR", help="with --checkpoint: write confusion, ROC and distance PNGs here")
    ev.set_defaults(func=_cmd_evaluate)

    fh = sub.add_parser("fit-head", help="fit an xgboost/linear/mlp/svm/random_forest head on a checkpoint's embeddings")
    fh.add_argument("checkpoint", help="a checkpoint written by fer-edge train (e.g. runs/x/best.pt)")
    fh.add_argument("--kind", required=True, help="xgboost, linear, mlp, svm or random_forest")
    fh.add_argument("--data", required=True, help="dataset root with train/ and val/ (test/ for --test)")
    fh.add_argument("--search", type=int, default=0, help="random-search fits selected on val accuracy (0: one fit)")
    fh.add_argument("--params", help='JSON object of head parameters, pinned during the search, e.g. \'{"max_depth": 6}\'')
    fh.add_argument("--out", help="head folder (default: RUN/heads/KIND beside the checkpoint)")
    fh.add_argument("--limit-per-class", type=int, help="first N train images per class (val and test stay whole)")
    fh.add_argument("--test", action="store_true", help="also report the test split (never used for selection)")
    fh.add_argument("--n-jobs", type=int, help="threads for xgboost / random forest (default: all cores)")
    fh.add_argument("--threads", type=int, help="torch threads for embedding extraction")
    fh.add_argument("--seed", type=int, default=0)
    fh.set_defaults(func=_cmd_fit_head)

    rp = sub.add_parser("report", help="report.json + PNG plots of a training run: model, TTA, heads, curves")
    rp.add_argument("run", help="a run folder (with best.pt) or a checkpoint file")
    rp.add_argument("--data", required=True, help="dataset root with split folders, or fer2013.csv")
    rp.add_argument("--split", default="test", help="split to evaluate on (default test)")
    rp.add_argument("--tta", default="none", choices=TTA_MODES, help="also evaluate with TTA")
    rp.add_argument("--out", help="report folder (default RUN/report)")
    rp.add_argument("--limit-per-class", type=int, help="first N images per class (quick checks)")
    rp.add_argument("--threads", type=int, help="torch threads")
    rp.set_defaults(func=_cmd_report)

    d = sub.add_parser("demo", help="run a model on the bundled sample faces; prints label, score and latency")
    _add_model_args(d)
    d.set_defaults(func=_cmd_demo)

    vd = sub.add_parser("video", help="faces in a video file, camera, image folder or synthetic:N clip, tracked over time")
    vd.add_argument("input", help="a video file, a camera index (0), an image folder, or synthetic:N (a generated clip)")
    _add_model_args(vd)
    vd.add_argument("--out", help="write an annotated video (.mp4 or .avi)")
    vd.add_argument("--json", action="store_true", help="print one JSON line per frame, then a summary line")
    vd.add_argument("--detector", default="auto", help="auto (yunet, else haar), yunet or haar")
    vd.add_argument("--margin", type=float, help="crop margin, a fraction of the face side (default: the detector's)")
    vd.add_argument("--no-align", action="store_true", help="do not rotate crops to level the eyes")
    vd.add_argument("--smooth", type=float, default=0.0,
                    help="weight of the past in each track's moving average of probabilities (0 = off, e.g. 0.7)")
    vd.add_argument("--max-frames", type=int, help="stop after N frames")
    vd.add_argument("--detect-every", type=int, default=_video_default("detect_every"),
                    help="run the face detector on every Nth frame and follow faces in between (1 = every frame)")
    vd.add_argument("--redetect-below", type=float, default=_video_default("redetect_below"),
                    help="detect at once when a followed face matches its template below this correlation")
    vd.add_argument("--min-face", type=int, help="smallest face to find, in frame pixels (default: the detector's, 48)")
    vd.set_defaults(func=_cmd_video)

    pf = sub.add_parser("profile", help="per-stage latency (p50/p95/p99), throughput and memory per backend")
    pf.add_argument("bundle", nargs="?", help="bundle folder or zip, or a packaged model name (default: the default)")
    pf.add_argument("--models", metavar="M1,M2", help="compare these models (packaged names or bundles): ms per crop "
                    "of the pair each serves here beside its recorded accuracy (batch 1; --threads, --runs apply)")
    pf.add_argument("--backends", default="auto", help="auto, all (every usable backend x precision), or a comma list")
    pf.add_argument("--precision", default="all", help="all (every shipped precision), auto, or a comma list")
    pf.add_argument("--heads", default="auto", help="auto (the bundle's default head), all, or a comma list")
    pf.add_argument("--batch", default="1,8,32", help="comma list of batch sizes")
    pf.add_argument("--threads", default="1,2", help="comma list of thread counts")
    pf.add_argument("--runs", type=int, default=50, help="timed calls per row")
    pf.add_argument("--warmup", type=int, default=5, help="untimed calls before each row")
    pf.add_argument("--no-detection", action="store_true", help="skip the face-detection stage")
    pf.add_argument("--tta", default="none", choices=TTA_MODES,
                    help="profile with this test-time augmentation (its cost: 2 or 10 backbone views per crop)")
    pf.add_argument("--json", metavar="FILE", help="write every row as JSON")
    pf.add_argument("--plot", metavar="FILE", help="bar chart of ms per crop (.svg without matplotlib)")
    pf.set_defaults(func=_cmd_profile)

    bh = sub.add_parser("build-head", help="build a bundle's compiled tree head for this machine (CMake + C compiler)")
    bh.add_argument("bundle", help="bundle folder or zip")
    bh.add_argument("--head", default="xgboost", help="name of the head in the manifest's heads (default xgboost)")
    bh.add_argument("--jobs", type=int, help="parallel compile jobs (default: all cores)")
    bh.set_defaults(func=_cmd_build_head)

    ex = sub.add_parser("export", help="turn a training checkpoint into a verified bundle")
    ex.add_argument("checkpoint", help="a checkpoint written by fer-edge train (e.g. runs/x/best.pt) or its run folder")
    ex.add_argument("--out", required=True, help="bundle folder to write")
    ex.add_argument("--name", help="model name in the manifest (default: the folder name)")
    ex.add_argument("--targets", default="onnx,openvino",
                    help="comma list of formats: onnx, openvino, tensorrt (tensorrt needs TensorRT and a GPU here), "
                         "ncnn (needs the ncnn and pnnx wheels)")
    ex.add_argument("--precision", default="fp32,int8", help="comma list: fp32, fp16 (openvino, tensorrt, ncnn), int8")
    ex.add_argument("--artifacts", help="ship exactly these format/precision keys, e.g. onnx/int8,openvino/int8 "
                    "(overrides --targets/--precision; INT8 is still gated against FP32 built at export)")
    ex.add_argument("--calib", help="dataset for INT8 calibration (default: the val split of --val)")
    ex.add_argument("--val", "--eval", dest="val", help="dataset root whose val split gates INT8 accuracy")
    ex.add_argument("--max-drop", type=float, default=0.5, help="largest INT8 accuracy drop on val, in points")
    ex.add_argument("--max-f1-drop", type=float, default=1.0, help="largest INT8 macro-F1 drop on val, in points")
    ex.add_argument("--allow-drop", action="store_true",
                    help="ship an INT8 artifact that drops more than allowed (default: it is left out, the rest ship)")
    ex.add_argument("--head", choices=("xgboost", "linear"), help="add the fitted head from RUN/heads/<kind>/")
    ex.add_argument("--head-path", help="folder with the head's head.json (instead of RUN/heads/<kind>/)")
    ex.add_argument("--default-head", action="store_true", help="make the head the default even if it does not "
                    "beat the in-graph classifier on val")
    ex.add_argument("--max-batch", type=int, default=32, help="largest batch of TensorRT engines")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    ex.add_argument("--description")
    ex.add_argument("--train-command", help="how the checkpoint was trained, if it does not record it itself")
    ex.add_argument("--trained-on", help="the hardware that trained the checkpoint, e.g. '1x NVIDIA H200'")
    ex.add_argument("--train-minutes", type=float, help="the training's wall time in minutes")
    ex.set_defaults(func=_cmd_export)

    an = sub.add_parser("add-ncnn", help="add an ncnn artifact to a bundle folder, converted from the ONNX it ships, "
                                         "gated on val like an exported one")
    an.add_argument("bundle", help="bundle folder")
    an.add_argument("--val", required=True, help="dataset root whose val split gates it")
    an.add_argument("--precision", default="fp16", choices=("fp16", "fp32"), help="fp16 (FP16 weights) or fp32")
    an.add_argument("--threads", type=int, default=1, help="threads for the checks and the val evaluation")
    an.set_defaults(func=_cmd_add_ncnn)

    vf = sub.add_parser("verify", help="re-run a bundle's golden inputs through every artifact and head; "
                                       "exit 5 on any failure")
    vf.add_argument("bundle", help="bundle folder or zip, or a packaged model name")
    vf.add_argument("--json", action="store_true", help="print the report as JSON")
    vf.set_defaults(func=_cmd_verify)

    be = sub.add_parser("build-engine", help="build TensorRT engines for this GPU into a bundle folder")
    be.add_argument("bundle", help="bundle folder")
    be.add_argument("--precision", default="fp16", help="comma list: fp32, fp16, int8")
    be.add_argument("--max-batch", type=int, default=32, help="largest batch of the optimization profile")
    be.add_argument("--device", default=None, help=DEVICE_HELP + " (engines are built on CUDA GPUs only)")
    be.set_defaults(func=_cmd_build_engine)

    t = sub.add_parser("train", help="train a backbone on an ImageFolder tree or fer2013.csv (torchrun: DDP)")
    t.add_argument("--recipe", help="a named recipe (fer_edge/train/recipes; see --list-recipes) or a JSON file")
    t.add_argument("--list-recipes", action="store_true", help="print the named recipes and what each reproduces")
    t.add_argument("--arch")
    t.add_argument("--data", help="dataset root with train/ and val/, or fer2013.csv")
    t.add_argument("--out", help="run folder for checkpoints and metrics")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, help="global batch, split over torchrun processes")
    t.add_argument("--lr", type=float)
    t.add_argument("--loss", help="ce, triplet, ce+triplet or distill")
    t.add_argument("--teacher", help="distillation teacher: a checkpoint .pt or a bundle")
    t.add_argument("--pretrained", help="a local torchvision-style state_dict file")
    t.add_argument("--regime", help="scratch, transfer (classifier only) or finetune")
    t.add_argument("--tta", help="test-time augmentation for validation: none, flip, ten_crop")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--amp", help="auto (bf16 on CUDA), bf16 or off")
    t.add_argument("--compile", help="off, or a torch.compile mode/backend: default, max-autotune, inductor, ...")
    t.add_argument("--threads", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--limit-per-class", type=int, help="use the first N images of each class (quick checks)")
    t.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="stop cleanly, checkpoint saved, before this many minutes have passed")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other training option, e.g. --set weight_decay=1e-4 --set augment.hflip=0 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.pt")
    t.set_defaults(func=_cmd_train)
    return p


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, recorded into checkpoints and manifests."""
    return " ".join(["fer-edge", *map(shlex.quote, args.argv)])


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for any tool whose reader left (| head)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        code = _run(args)
        sys.stdout.flush()  # inside the try: a reader that left shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly. Later writes (and the flush at exit) go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        extra = OPTIONAL_MODULES.get(top)
        if extra is None:
            raise
        extra = COMMAND_EXTRAS.get(args.command, extra)
        print(f"fer-edge {args.command}: error: this command needs {top}, which is not installed here. "
              f"Install it with: {install_hint(extra)}", file=sys.stderr)
        return 4
    except FerEdgeError as e:
        print(f"fer-edge {args.command}: error: {e}", file=sys.stderr)
        return next((code for cls, code in EXIT_CODES.items() if isinstance(e, cls)), 1)


if __name__ == "__main__":
    sys.exit(main())
