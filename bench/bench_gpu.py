"""Training at the device's pace, side by side in one process on one device (issue "Training at the
speed of the GPU"):

(a) images/s of a plain torchvision ResNet-18 cross-entropy step and of the full method's step
    (CBAM-ResNet-18, mu/logvar heads, uncertainty mixing, class-weighted add-up loss), both with bf16
    autocast, channels_last and fused Adam on CUDA, timed in interleaved rounds; a variant with global
    head pooling shows what the uncertainty heads' 7x7 pooling costs. Goal on a GPU: full / plain >= 0.8.
(b) images/s of the device-resident data path alone (fer_core/data/device_data.py: gather, resize to the
    input size, flip, erasing, noise, normalisation) over a RAF-DB-sized uint8 split. Goal: >= 3x what
    the full step consumes.
(c) 60 epochs of a RAF-DB-sized train split (12,271 images of 100x100): projected from (a) and (b), and
    measured by running the engine's own loop (train_one_epoch over the device data path; no
    validation) for --measure-epochs epochs. Goal on a GPU: under 90 s of training time.
Also the device's memory peak per part.

    .venv/bin/python -m bench.bench_gpu          # CUDA when present: 224 px, batch 128, 60 epochs measured
                                                 # on CPU: 48 px, batch 32, 512 images, 1 epoch measured
    .venv/bin/python -m bench.bench_gpu --compile --batch 256    # torch.compile'd step (train.compile)

On CPU it runs the same code at small sizes (tests/bench/test_bench_gpu.py runs it); its figures say
nothing about a GPU, so the GPU goals are reported as not measured there. Writes bench/results/gpu.json
(or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fer_core.config import Config, load_config  # noqa: E402
from fer_core.data.dataset import EpochBatchSampler  # noqa: E402
from fer_core.data.device_data import DeviceAugment, DeviceBatchLoader, DeviceImageCache  # noqa: E402
from fer_core.io import write_json  # noqa: E402
from fer_core.model import build_model  # noqa: E402
from fer_core.training.class_weights import compute_class_weights  # noqa: E402
from fer_core.training.loop import TrainStep, autocast, compile_model, train_one_epoch  # noqa: E402
from fer_core.training.losses import WeightedAddUpLoss  # noqa: E402
from fer_core.training.engine import adam, make_optimizer  # noqa: E402
from fer_core.training.resume import RunState  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu.json"
RAFDB_TRAIN_IMAGES = 12_271
RAFDB_TRAIN_COUNTS = [2524, 4772, 1982, 1290, 281, 717, 705]
GOALS = {"full_over_plain": 0.8, "data_over_step": 3.0, "sixty_epochs_s": 90.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _memory(device: torch.device, into: dict) -> None:
    """The part's peak: device memory allocated on CUDA, the process's peak RSS on CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into["memory_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        into["memory_peak_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        into["memory_note"] = "process peak RSS (CPU)"


def plain_step(device: torch.device) -> tuple[Callable, torch.nn.Module]:
    from torchvision.models import resnet18

    model = resnet18(num_classes=7).to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = adam(model.parameters(), device, lr=2e-4, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()

    def run(images: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()

    return run, model


def full_step(config: Config, device: torch.device, compiled: bool) -> tuple[Callable, TrainStep, torch.optim.Optimizer]:
    model = build_model(config.model, 7).to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    if compiled:
        compile_model(model, config.train.compile_mode, config.train.compile_backend)
    weights = compute_class_weights(RAFDB_TRAIN_COUNTS, config.weights.scheme, max_weight=config.weights.max_weight)
    step = TrainStep(model, WeightedAddUpLoss(weights).to(device), mixing=True)
    optimizer = make_optimizer(model, config.train, device)
    generator = torch.Generator().manual_seed(0)

    def run(images: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = step(images, targets, generator)["loss"]
        loss.backward()
        optimizer.step()

    return run, step, optimizer


def bench_steps(variants: dict[str, Config], device: torch.device, batch: int, size: int, rounds: int, iters: int,
                compiled: bool) -> dict:
    """images/s of each step, timed round-robin so that noise hits every one alike."""
    torch.manual_seed(0)
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randint(0, 7, (batch,), device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    runs, rows = {}, {}
    for name, config in variants.items():
        rows[name] = {}
        with _memory(device, rows[name]):
            runs[name], step, _ = full_step(config, device, compiled)
            for _ in range(3):                          # warm-up: kernels, allocator, Adam state, compile
                runs[name](images, targets)
            _sync(device)
        rows[name]["parameters"] = sum(p.numel() for p in step.parameters())
    rows["plain"] = {}
    with _memory(device, rows["plain"]):
        runs["plain"], model = plain_step(device)
        for _ in range(3):
            runs["plain"](images, targets)
        _sync(device)
    rows["plain"]["parameters"] = sum(p.numel() for p in model.parameters())
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            _sync(device)
            started = time.perf_counter()
            for _ in range(iters):
                run(images, targets)
            _sync(device)
            rates[name].append(iters * batch / (time.perf_counter() - started))
    plain = statistics.median(rates["plain"])
    for name, values in rates.items():
        rows[name].update(images_per_s=round(statistics.median(values), 1),
                          ratio_to_plain=round(statistics.median(values) / plain, 3), rounds=[round(v, 1) for v in values])
    return rows


def raf_sized_split(images: int, stored: int, device: torch.device) -> DeviceImageCache:
    """A uint8 split of `images` faces-sized images (smooth random content) with RAF-DB's class mix."""
    generator = torch.Generator().manual_seed(0)
    small = torch.randint(0, 256, (images, 3, stored // 4, stored // 4), dtype=torch.uint8, generator=generator)
    pixels = torch.nn.functional.interpolate(small.float(), size=(stored, stored), mode="bilinear").round().to(torch.uint8)
    shares = torch.tensor(RAFDB_TRAIN_COUNTS, dtype=torch.float64)
    labels = torch.multinomial(shares / shares.sum(), images, replacement=True, generator=generator)
    return DeviceImageCache.from_tensors(pixels.to(device), labels.to(device))


def bench_data(cache: DeviceImageCache, config: Config, batch: int, epochs: int) -> dict:
    """images/s the device data path delivers (gather + augment), no training."""
    sampler = EpochBatchSampler(len(cache), batch, seed=0, shuffle=True)
    loader = DeviceBatchLoader(cache, sampler, DeviceAugment.from_config(config.train, train=True))
    row: dict = {}
    with _memory(cache.device, row):
        for images, _ in loader:                          # warm-up epoch
            pass
        rates = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch + 1)
            _sync(cache.device)
            started = time.perf_counter()
            seen = sum(images.shape[0] for images, _ in loader)
            _sync(cache.device)
            rates.append(seen / (time.perf_counter() - started))
    row.update(images_per_s=round(statistics.median(rates), 1), epochs=epochs, images=len(cache))
    return row


def measure_epochs(cache: DeviceImageCache, config: Config, device: torch.device, batch: int, epochs: int,
                   compiled: bool) -> dict:
    """The engine's loop (train_one_epoch: mixing step, weighted loss, Adam, host reads every
    train.sync_every_steps) over the device data path for `epochs` epochs; seconds, no validation."""
    _, step, optimizer = full_step(config, device, compiled)
    sampler = EpochBatchSampler(len(cache), batch, seed=0, shuffle=True)
    loader = DeviceBatchLoader(cache, sampler, DeviceAugment.from_config(config.train, train=True))
    state, mix = RunState(), torch.Generator().manual_seed(0)
    seconds = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        sampler.set_start(0)
        _sync(device)
        started = time.perf_counter()
        train_one_epoch(step, step.model, loader, optimizer, device, mix, state, lambda *_: None, progress=False,
                        sync_every=config.train.sync_every_steps)
        _sync(device)
        seconds.append(time.perf_counter() - started)
        state.batch = 0
    result = {"epochs": epochs, "seconds": round(sum(seconds), 2), "epoch_seconds": [round(s, 3) for s in seconds],
              "images": len(cache), "final_train_loss": round(state.sums["loss"] / max(state.sums["seen"], 1), 4)}
    if device.type == "cuda":
        result["host_syncs_per_epoch"] = count_host_syncs(step, optimizer, loader, device, mix, config)
    return result


def count_host_syncs(step: TrainStep, optimizer: torch.optim.Optimizer, loader: DeviceBatchLoader,
                     device: torch.device, mix: torch.Generator, config: Config) -> dict:
    """One more epoch under CUDA's sync debug mode: every operation that makes the host wait for the
    device warns. Expected: one read per train.sync_every_steps steps (and the epoch's last)."""
    import warnings

    loader.sampler.set_epoch(10_000)
    loader.sampler.set_start(0)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_one_epoch(step, step.model, loader, optimizer, device, mix, RunState(), lambda *_: None,
                            progress=False, sync_every=config.train.sync_every_steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(item.message) for item in caught if "synchroniz" in str(item.message).lower()]
    batches = len(loader)
    expected = -(-batches // config.train.sync_every_steps) + 1   # one read per flush
    return {"batches": batches, "syncs": len(syncs), "expected_at_most": expected,
            "met": len(syncs) <= expected, "first": sorted(set(syncs))[:5]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--size", type=int, default=None, help="input size (CUDA: 224 = params.yaml; CPU: 48)")
    parser.add_argument("--batch", type=int, default=None, help="batch (CUDA: 128; CPU: 32)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20, help="steps per timed round")
    parser.add_argument("--train-images", type=int, default=None,
                        help=f"the split the data path and the measured epochs run over (CUDA: {RAFDB_TRAIN_IMAGES:,}, "
                             "RAF-DB's; CPU: 512)")
    parser.add_argument("--stored", type=int, default=100, help="stored image side (RAF-DB aligned: 100)")
    parser.add_argument("--epochs", type=int, default=60, help="the epochs to project (params.yaml: 60)")
    parser.add_argument("--measure-epochs", type=int, default=None,
                        help="epochs actually run (default: --epochs on CUDA, 1 on CPU)")
    parser.add_argument("--data-epochs", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the full step (train.compile)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    on_gpu = device.type == "cuda"
    args.size = args.size or (224 if on_gpu else 48)
    args.batch = args.batch or (128 if on_gpu else 32)
    args.train_images = args.train_images or (RAFDB_TRAIN_IMAGES if on_gpu else 512)
    if not on_gpu:
        args.iters = min(args.iters, 4)
    config = load_config(ROOT / "params.yaml").override([f"train.image_size={args.size}",
                                                         f"train.batch_size={args.batch}", *args.overrides])
    variants = {"full": config}
    if config.model.head_pool != 1:
        variants["full, model.head_pool=1"] = config.override({"model.head_pool": 1})
    started = time.perf_counter()
    steps = bench_steps(variants, device, args.batch, args.size, args.rounds, args.iters, args.compile)
    cache = raf_sized_split(args.train_images, args.stored, device)
    data = bench_data(cache, config, args.batch, args.data_epochs)
    epochs_run = args.measure_epochs if args.measure_epochs is not None else (args.epochs if device.type == "cuda" else 1)
    measured = measure_epochs(cache, config, device, args.batch, epochs_run, args.compile)

    full, plain = steps["full"]["images_per_s"], steps["plain"]["images_per_s"]
    pace = min(full, data["images_per_s"])
    raf_epoch_images = RAFDB_TRAIN_IMAGES
    projected = args.epochs * raf_epoch_images / pace
    per_image = measured["seconds"] / (measured["epochs"] * measured["images"])
    measured_sixty = per_image * args.epochs * raf_epoch_images

    def goal(value: float, target: float, higher_is_better: bool = True) -> dict:
        met = (value >= target if higher_is_better else value <= target) if on_gpu else None
        return {"value": round(value, 3), "goal": f"{'>=' if higher_is_better else '<'} {target}", "met": met,
                **({} if on_gpu else {"note": "not measured: no GPU (CPU figures at small sizes)"})}

    result = {
        "benchmark": "gpu", "command": " ".join(["python -m bench.bench_gpu", *(sys.argv[1:] if argv is None else argv)]),
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if on_gpu else (platform.processor() or platform.machine()),
        "image_size": args.size, "batch": args.batch, "compile": args.compile, "torch": torch.__version__,
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "steps": steps, "data_path": data,
        "sixty_epochs": {"epochs": args.epochs, "train_images": raf_epoch_images,
                         "projected_s": round(projected, 1), "measured_run": measured,
                         "measured_extrapolated_s": round(measured_sixty, 1),
                         "measured_is_full": measured["epochs"] == args.epochs and measured["images"] == raf_epoch_images},
        "goals": {"full_over_plain": goal(full / plain, GOALS["full_over_plain"]),
                  "data_over_step": goal(data["images_per_s"] / full, GOALS["data_over_step"]),
                  "sixty_epochs_s": goal(measured_sixty, GOALS["sixty_epochs_s"], higher_is_better=False)},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(f"{device} ({result['device_name']}), {args.size}x{args.size}, batch {args.batch}"
          f"{', compiled' if args.compile else ''}; median of {args.rounds} interleaved rounds of {args.iters} steps")
    for name, row in steps.items():
        label = "plain torchvision resnet18 + CE" if name == "plain" else name
        print(f"  {label:<34} {row['images_per_s']:>10.1f} img/s  {row['ratio_to_plain']:>6.3f} of plain  "
              f"peak {row['memory_peak_mib']:>9.1f} MiB")
    print(f"  {'device data path alone':<34} {data['images_per_s']:>10.1f} img/s  "
          f"{data['images_per_s'] / full:>6.2f}x the full step")
    print(f"  60 epochs of {raf_epoch_images:,} images: projected {projected:.1f} s, measured "
          f"{measured['seconds']:.1f} s for {measured['epochs']} epoch(s) of {measured['images']:,} "
          f"-> {measured_sixty:.1f} s")
    for name, row in result["goals"].items():
        print(f"  goal {name}: {row['value']} ({row['goal']}): "
              f"{'met' if row['met'] else 'NOT met' if row['met'] is False else row.get('note')}")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
