"""`fer-edge`: a thin skin over the Python API. Each subcommand calls one public function."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Sequence

from ._version import __version__
from .errors import BundleError, FerEdgeError, RuntimeUnavailableError

EXIT_CODES = {BundleError: 3, RuntimeUnavailableError: 4}


def _recognizer(args: argparse.Namespace):
    from .recognizer import Recognizer

    return Recognizer(args.model, args.backend, precision=args.precision, threads=args.threads)


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"fer_edge {data['fer_edge']} (python {data['python']}, numpy {data['numpy']})")
    print(f"cpu: {data['cpu']}")
    print("backends:")
    for name, b in data["backends"].items():
        print(f"  {name:12s} {'usable' if b['usable'] else 'not usable':10s} {b['reason']}"
              + ("" if b["usable"] else f"  (pip install 'fer-edge[{b['extra']}]')"))
    print(f"auto order: {', '.join(data['auto_order'])} ({data['auto_reason']})")
    print(f"default model: {data['default_model']}; packaged models: {', '.join(data['packaged_models']) or 'none'}")
    for name, m in data["models"].items():
        print(f"  {name}: {m}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .data import read_image

    rec = _recognizer(args)
    images = [read_image(p) for p in args.images]
    preds = rec.predict_batch(images)
    if args.json:
        print(json.dumps({"model": rec.describe(),
                          "predictions": [{"image": p, **pred.as_dict()} for p, pred in zip(args.images, preds)]},
                         indent=2))
    else:
        for path, pred in zip(args.images, preds):
            print(f"{path}\t{pred.label}\t{pred.score:.3f}")
        print(f"# {rec.backend} {rec.precision}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_matrix

    result = evaluate_matrix(args.model, args.data, args.split, backends=args.backend, precisions=args.precision,
                             threads=args.threads, limit_per_class=args.limit_per_class)
    for key, r in result["runs"].items():
        print(f"== {result['model']} on {args.data} [{args.split}] with {key}: {r['n']} images, {r['seconds']:.1f} s")
        print(f"accuracy {r['accuracy'] * 100:.2f} %   macro precision {r['macro_precision'] * 100:.2f} %   "
              f"macro recall {r['macro_recall'] * 100:.2f} %   macro F1 {r['macro_f1'] * 100:.2f} %")
        print("per-class recall: " + "  ".join(f"{c} {v['recall'] * 100:.1f}" for c, v in r["per_class"].items()))
        labels = r["labels"]
        print("confusion matrix (rows true, columns predicted):")
        print("          " + " ".join(f"{c[:8]:>8s}" for c in labels))
        for c, row in zip(labels, r["confusion_matrix"]):
            print(f"{c[:8]:>8s}  " + " ".join(f"{v:8d}" for v in row))
    for key, value in result["agreement"].items():
        print(f"top-1 agreement {key}: {value * 100:.2f} %")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    if args.record:
        from .export import record_evaluation

        key = record_evaluation(args.model, result, command=_command_line(args))
        print(f"recorded as evaluation[{key!r}] in {args.model}/manifest.json and MODEL_CARD.md")
    return 0


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


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_bundle

    out = export_bundle(args.checkpoint, args.out, name=args.name or os.path.basename(os.path.normpath(args.out)),
                        targets=tuple(args.targets.split(",")), precisions=tuple(args.precision.split(",")),
                        calib=args.calib, val=args.val, max_drop_pp=args.max_drop, allow_drop=args.allow_drop,
                        description=args.description or "", commands=_export_commands(args))
    print(f"wrote bundle {out}")
    return 0


def _export_commands(args: argparse.Namespace) -> dict[str, str]:
    commands = {"export": _command_line(args)}
    if args.train_command:
        commands["train"] = args.train_command
    return commands


def _cmd_train(args: argparse.Namespace) -> int:
    from .train.config import TrainConfig, load_recipe
    from .train.loop import train

    cfg = load_recipe(args.recipe) if args.recipe else TrainConfig()
    cfg = cfg.override(arch=args.arch, data=args.data, out=args.out, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, device=args.device, threads=args.threads,
                       limit_per_class=args.limit_per_class, seed=args.seed)
    best = train(cfg, resume=args.resume, command=_command_line(args))
    print(json.dumps(best))
    return 0


def _add_model_args(p: argparse.ArgumentParser, *, multi: bool = False) -> None:
    p.add_argument("--model", help="bundle folder or zip, or a packaged model name (default: the packaged default)")
    if multi:
        p.add_argument("--backend", default="auto", help="auto, a backend name, a comma list, or 'all'")
        p.add_argument("--precision", default="auto", help="auto, fp32, int8, a comma list, or 'all'")
    else:
        p.add_argument("--backend", default="auto", help="auto (default) or a backend name: onnxruntime, openvino")
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
    pr.set_defaults(func=_cmd_predict)

    ev = sub.add_parser("evaluate", help="accuracy, macro P/R/F1, per-class recall and confusion matrix of a bundle")
    _add_model_args(ev, multi=True)
    ev.add_argument("--data", required=True, help="ImageFolder root with split folders, a class-folder tree, or fer2013.csv")
    ev.add_argument("--split", default="test", help="split folder or CSV Usage (train/val/test); default test")
    ev.add_argument("--limit-per-class", type=int, help="first N images per class (quick checks)")
    ev.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    ev.add_argument("--record", action="store_true",
                    help="store the figures in the bundle's manifest and model card (a bundle folder)")
    ev.set_defaults(func=_cmd_evaluate)

    d = sub.add_parser("demo", help="run a model on the bundled sample faces; prints label, score and latency")
    _add_model_args(d)
    d.set_defaults(func=_cmd_demo)

    ex = sub.add_parser("export", help="turn a training checkpoint into a verified bundle")
    ex.add_argument("checkpoint", help="a checkpoint written by fer-edge train (e.g. runs/x/best.pt)")
    ex.add_argument("--out", required=True, help="bundle folder to write")
    ex.add_argument("--name", help="model name in the manifest (default: the folder name)")
    ex.add_argument("--targets", default="onnx,openvino", help="comma list of formats: onnx, openvino")
    ex.add_argument("--precision", default="fp32,int8", help="comma list: fp32, int8")
    ex.add_argument("--calib", help="dataset for INT8 calibration (default: the val split of --val)")
    ex.add_argument("--val", help="dataset root whose val split gates INT8 accuracy")
    ex.add_argument("--max-drop", type=float, default=0.5, help="largest INT8 accuracy drop on val, in points")
    ex.add_argument("--allow-drop", action="store_true", help="ship INT8 even if it drops more than --max-drop")
    ex.add_argument("--description")
    ex.add_argument("--train-command", help="how the checkpoint was trained, if it does not record it itself")
    ex.set_defaults(func=_cmd_export)

    t = sub.add_parser("train", help="train a backbone on an ImageFolder tree or fer2013.csv")
    t.add_argument("--recipe", help="a named recipe (fer_edge/train/recipes) or a JSON file")
    t.add_argument("--arch")
    t.add_argument("--data", help="dataset root with train/ and val/, or fer2013.csv")
    t.add_argument("--out", help="run folder for checkpoints and metrics")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--device")
    t.add_argument("--threads", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--limit-per-class", type=int, help="use the first N images of each class (quick checks)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.set_defaults(func=_cmd_train)
    return p


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, recorded into checkpoints and manifests."""
    return " ".join(["fer-edge", *map(shlex.quote, args.argv)])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except FerEdgeError as e:
        print(f"fer-edge {args.command}: error: {e}", file=sys.stderr)
        return next((code for cls, code in EXIT_CODES.items() if isinstance(e, cls)), 1)


if __name__ == "__main__":
    sys.exit(main())
