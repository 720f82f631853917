"""Benchmark the training step and the data loader on this machine's CPU (or CUDA with --device cuda).

(a) images/s of our full training step (CBAM-ResNet-18 + uncertainty heads, feature mixing, class-weighted
    add-up loss, Adam with two param groups) against a plain torchvision ResNet-18 cross-entropy Adam step,
    same batch and input size, warmed up, timed in interleaved rounds so that machine noise hits both.
    Goal: ours / plain >= 0.75 (what CBAM, the second head and mixing may cost).
(b) images/s the DataLoader delivers (train transform, FERDataset, train.workers workers, RAM cache as
    configured) on a generated prepared dataset of 100x100 PNGs, against what the step consumes.
    Goal: loader >= 1.5x the step, so training is never starved.

    .venv/bin/python bench/bench_train.py [--batch 32] [--size 112] [--rounds 3] [--iters 4] [--workers N]

Prints a table and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fer_core.config import Config  # noqa: E402
from fer_core.data.dataset import EpochBatchSampler, FERDataset  # noqa: E402
from fer_core.data.transforms import train_transform_from_config  # noqa: E402
from fer_core.io import write_json  # noqa: E402
from fer_core.labels import CLASS_NAMES_7  # noqa: E402
from fer_core.model import build_model  # noqa: E402
from fer_core.training.class_weights import compute_class_weights  # noqa: E402
from fer_core.training.loop import TrainStep, autocast, make_loader  # noqa: E402
from fer_core.training.losses import WeightedAddUpLoss  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "train.json"
# RAF-DB train counts (neutral, happy, sad, surprise, fear, disgust, anger): realistic class weights
RAFDB_TRAIN_COUNTS = [2524, 4772, 1982, 1290, 281, 717, 705]


def ours_step(config: Config, device: torch.device):
    """A closure running one full training step of ours on a given batch."""
    model = build_model(config.model, 7).to(device).train()
    weights = compute_class_weights(RAFDB_TRAIN_COUNTS, config.weights.scheme)
    step = TrainStep(model, WeightedAddUpLoss(weights).to(device), mixing=True)
    optimizer = torch.optim.Adam(model.param_groups(config.train.lr, config.train.lr_fc, config.train.weight_decay))
    generator = torch.Generator().manual_seed(0)

    def run(images: torch.Tensor, targets: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = step(images, targets, generator)["loss"]
        loss.backward()
        optimizer.step()
        return loss.item()

    return run, model


def plain_step(device: torch.device):
    """The reference: torchvision ResNet-18, cross entropy, Adam."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=7).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()

    def run(images: torch.Tensor, targets: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return run, model


def time_steps(run, images, targets, iters: int, device: torch.device) -> float:
    """images/s over `iters` steps."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(iters):
        run(images, targets)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iters * images.shape[0] / (time.perf_counter() - started)


def bench_steps(configs: dict[str, Config], device: torch.device, batch: int, size: int, rounds: int,
                iters: int) -> dict:
    """images/s of each config's full step and of the plain step, timed round-robin (noise hits all)."""
    torch.manual_seed(0)
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randint(0, 7, (batch,), device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    runs, models = {}, {}
    for name, config in configs.items():
        runs[name], models[name] = ours_step(config, device)
    runs["plain"], models["plain"] = plain_step(device)
    if device.type == "cuda":
        for model in models.values():
            model.to(memory_format=torch.channels_last)
    for run in runs.values():  # warm-up: allocator, kernels, Adam state
        for _ in range(2):
            run(images, targets)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name].append(time_steps(run, images, targets, iters, device))
    plain = statistics.median(rates["plain"])
    return {
        name: {"images_per_s": statistics.median(values), "ratio_to_plain": statistics.median(values) / plain,
               "rounds": values, "parameters": sum(p.numel() for p in models[name].parameters())}
        for name, values in rates.items()
    }


def make_dataset(root: Path, images: int, side: int = 100, seed: int = 0) -> Path:
    """A prepared dataset (manifest.csv + PNGs + dataset.json) of random faces-sized images, all train."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "label_name", "split", "source_id", "sha256", "width", "height"])
        for index in range(images):
            label = index % 7
            relative = f"images/{index:05d}.png"
            smooth = rng.integers(0, 256, (side // 4, side // 4, 3), dtype=np.uint8)  # PNG-compressible
            Image.fromarray(smooth).resize((side, side)).save(root / relative)
            writer.writerow([relative, label, CLASS_NAMES_7[label], "train", relative, "", side, side])
    (root / "dataset.json").write_text(json.dumps({"class_names": list(CLASS_NAMES_7), "num_classes": 7}))
    return root


def bench_loader(config: Config, batch: int, images: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fer-bench-train-") as tmp:
        data = make_dataset(Path(tmp), images)
        started = time.perf_counter()
        dataset = FERDataset(data, "train", train_transform_from_config(config.train),
                             cache_mb=config.train.cache_images_mb)
        cache_seconds = time.perf_counter() - started
        sampler = EpochBatchSampler(len(dataset), batch, seed=0)
        loader = make_loader(dataset, sampler, config.train.workers, torch.device("cpu"), 0)
        rates = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            started = time.perf_counter()
            seen = sum(images.shape[0] for images, _ in loader)
            rates.append(seen / (time.perf_counter() - started))
        return {
            "images": images, "workers": config.train.workers, "cached": dataset._cache is not None,
            "cache_seconds": cache_seconds, "epoch_rates": rates,
            # epoch 1 includes starting the workers; the steady state is the later epochs
            "loader_images_per_s": statistics.median(rates[1:] if len(rates) > 1 else rates),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=4, help="steps per timed round")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default train.workers)")
    parser.add_argument("--loader-images", type=int, default=1024)
    parser.add_argument("--loader-epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--no-variants", action="store_true", help="time only the configured model and plain")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    config = Config().override([f"train.image_size={args.size}", f"train.batch_size={args.batch}",
                                *([f"train.workers={args.workers}"] if args.workers is not None else []),
                                *args.overrides])
    device = torch.device(args.device)
    # the configured model, and two one-setting-off variants that show where its cost over plain comes from
    variants = {"ours": config}
    if not args.no_variants:
        if config.model.head_pool != 1:
            variants["ours, model.head_pool=1"] = config.override({"model.head_pool": 1})
        if config.model.cbam:
            variants["ours, model.cbam=false"] = config.override({"model.cbam": False})
    steps = bench_steps(variants, device, args.batch, args.size, args.rounds, args.iters)
    loader = bench_loader(config, args.batch, args.loader_images, args.loader_epochs)
    ours = steps["ours"]
    loader_ratio = loader["loader_images_per_s"] / ours["images_per_s"]
    result = {
        "batch": args.batch, "image_size": args.size, "device": str(device), "torch_threads": torch.get_num_threads(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
                    "cores": os.cpu_count()},
        "model": {"arch": config.model.arch, "cbam": config.model.cbam, "head_pool": config.model.head_pool},
        "step": steps, "loader": loader, "loader_over_step": loader_ratio,
        "goals": {"step_ratio_min": 0.75, "step_ratio_met": ours["ratio_to_plain"] >= 0.75,
                  "loader_over_step_min": 1.5, "loader_over_step_met": loader_ratio >= 1.5},
    }
    print(f"batch {args.batch}, {args.size}x{args.size}, {device}, {torch.get_num_threads()} torch threads, "
          f"median of {args.rounds} interleaved rounds of {args.iters} steps")
    print(f"  {'training step':<44} {'images/s':>10} {'vs plain':>9} {'params':>12}")
    for name, row in steps.items():
        label = "plain torchvision resnet18 + CE + Adam" if name == "plain" else name
        print(f"  {label:<44} {row['images_per_s']:>10.1f} {row['ratio_to_plain']:>9.3f} {row['parameters']:>12,}")
    print(f"  goal: ours / plain >= 0.75: {'met' if result['goals']['step_ratio_met'] else 'NOT met'}")
    print(f"  {'DataLoader, train transform, ' + str(loader['workers']) + ' workers':<44} "
          f"{loader['loader_images_per_s']:>10.1f} {loader_ratio:>8.2f}x of our step "
          f"(goal >= 1.5: {'met' if result['goals']['loader_over_step_met'] else 'NOT met'})")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
