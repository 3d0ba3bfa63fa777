"""Training throughput per architecture: images/s of the real training step and projected epoch time.

    python benchmarks/train_throughput.py [--archs tiny_fer,vgg_fer,...] [--steps 20] [--batch 128]
        [--device cpu|cuda] [--threads 2] [--amp auto|bf16|off] [--compile off|default|...] [--json out.json]

Each step is `fer_edge.train.loop.TrainStep`, exactly what `fer-edge train` runs: batched
augmentation on the device, forward (logits + embedding), cross-entropy, backward, SGD step, on
random uint8 48x48 faces already on the device. After --warmup steps (which absorb cuDNN autotuning
and torch.compile), --steps steps are timed. The projected FER2013 epoch is 28,709 training images
at that rate plus the 3,589 validation images at the measured inference rate (no TTA); data
loading, done once per run, is not included. Architectures run one after another in one process,
so ratios between rows are comparable even on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone

FER2013_TRAIN, FER2013_VAL = 28709, 3589


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(arch: str, args) -> dict:
    import torch

    from fer_edge.train.config import TrainConfig
    from fer_edge.train.loop import (TrainStep, build_criterion_for, build_model, build_optimizer, resolve_device,
                                     use_amp)
    from fer_edge.train.models import count_params
    from fer_edge.train.tta import predict_tta

    device = resolve_device(args.device)
    cfg = TrainConfig(arch=arch, batch_size=args.batch, device=args.device, amp=args.amp, compile=args.compile,
                      channels_last=not args.no_channels_last, lr=0.01, label_smoothing=0.1)
    torch.manual_seed(0)
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (args.batch * 4, 1, cfg.size, cfg.size), dtype=torch.uint8, device=device,
                           generator=gen)
    labels = torch.randint(0, 7, (args.batch * 4,), device=device, generator=gen)
    model = build_model(cfg, device)
    amp = use_amp(cfg, device)
    step = TrainStep(model, build_criterion_for(cfg, labels.cpu().numpy(), device), build_optimizer(model, cfg), None,
                     cfg, device, gen, amp=amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()

    def run(n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for i in range(n):
            j = (i % 4) * args.batch
            step(images[j : j + args.batch], labels[j : j + args.batch])
        _sync(device)
        return time.perf_counter() - t0

    warm = run(args.warmup)
    seconds = run(args.steps)
    train_ips = args.steps * args.batch / seconds

    eval_n = min(len(images), 512)
    predict_tta(model, images[:eval_n], cfg, "none", channels_last=cfg.channels_last, amp=amp)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    predict_tta(model, images[:eval_n], cfg, "none", channels_last=cfg.channels_last, amp=amp)
    _sync(device)
    eval_ips = eval_n / (time.perf_counter() - t0)
    row = {"arch": arch, "params": count_params(model), "batch": args.batch, "steps": args.steps,
           "warmup_seconds": warm, "ms_per_step": seconds / args.steps * 1000, "train_images_per_s": train_ips,
           "eval_images_per_s": eval_ips,
           "fer2013_epoch_s": FER2013_TRAIN / train_ips + FER2013_VAL / eval_ips, "amp": "bf16" if amp else "off",
           "compile": cfg.compile, "channels_last": cfg.channels_last}
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def machine(args) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "device": args.device, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/loadavg") as f:
            info["load_average_start"] = f.read().split()[0]
    except (OSError, StopIteration):
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=None, help="comma list (default: every registered architecture)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--amp", default="auto", help="auto (bf16 on CUDA), bf16 or off")
    ap.add_argument("--compile", default="off", help="off or a torch.compile mode / backend")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--json", help="write machine info and rows as JSON")
    args = ap.parse_args()

    import torch

    from fer_edge.train.models import MODELS

    if args.threads:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
    archs = args.archs.split(",") if args.archs else list(MODELS)
    info = machine(args)
    print(f"# {info.get('gpu') or info.get('cpu', info['processor'])}, torch {info['torch']}, "
          f"{info['threads']} threads, {info['date']}")
    print(f"{'arch':12s} {'params':>11s} {'batch':>5s} {'ms/step':>9s} {'train img/s':>12s} {'eval img/s':>11s} "
          f"{'epoch s':>9s}")
    rows = []
    for arch in archs:
        r = measure(arch, args)
        rows.append(r)
        print(f"{arch:12s} {r['params']:11,d} {r['batch']:5d} {r['ms_per_step']:9.1f} {r['train_images_per_s']:12.1f} "
              f"{r['eval_images_per_s']:11.1f} {r['fer2013_epoch_s']:9.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
