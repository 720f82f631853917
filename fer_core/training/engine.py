"""The training engine: `train(config, data_dir, run_dir)` -> a run folder (docs/architecture.md).

One epoch = `train_one_epoch` (mixing step, weighted loss, Adam), then `evaluate_split` on the val
split, then the per-epoch LR decay, best-on-validation selection (val mean class accuracy) and early
stopping. The test split is never touched here.

Resume is exact: checkpoints/last.pt (each epoch and every `train.checkpoint_every_steps` steps) holds
model/optimiser/scheduler state_dicts, every RNG state of every rank, the epoch, the batch within it and
the running sums of the epoch's train metrics. Batch order and augmentation are a pure function of
(seed, epoch) (`EpochBatchSampler`), so a run killed mid-epoch and resumed ends with weights
bit-identical to an uninterrupted run (tests/training/test_engine.py checks it).

Under torchrun (WORLD_SIZE > 1) every rank trains a shard through DistributedDataParallel; only rank 0
writes files and calls callbacks. Run as `torchrun --nproc-per-node N -m fer_core.training.torchrun
--data DIR --out RUN [--set k=v ...]`.

The parts: loop.py (the step module, one epoch, a split's evaluation), resume.py (the run's state as a
typed object and the resume checks), checkpoint.py (writing and reading it), this file (setting a run
up, the epoch loop, best-epoch selection, export).
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from fer_core.config import Config
from fer_core.data.dataset import EpochBatchSampler, FERDataset
from fer_core.data.device_data import DeviceAugment, DeviceBatchLoader, DeviceImageCache, fits_on_device
from fer_core.data.faces import FaceSettings
from fer_core.data.prepared import MANIFEST, read_info, train_counts
from fer_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform_from_config
from fer_core.io import remove_stale_temps, write_json
from fer_core.model import build_model, count_parameters
from fer_core.training import distributed as D
from fer_core.training.callbacks import CallbackList, TrainContext, TrainResult
from fer_core.training.checkpoint import (CHECKPOINT_FORMAT, capture_rng, cpu_state_dict, load_torch, restore_rng,
                                          save_torch)
from fer_core.training.class_weights import compute_class_weights, read_class_weights, weights_report
from fer_core.training.loop import TrainStep, compile_model, evaluate_split, make_loader, train_one_epoch
from fer_core.training.losses import WeightedAddUpLoss
from fer_core.training.resume import ResumeError, RunState, check_resumable

logger = logging.getLogger(__name__)

BEST_METRIC = "val_mean_class_accuracy"
# --------------------------------------------------------------------------------------------- setup

def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; with `deterministic`, ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this before its first call to be deterministic; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: a few CUDA backward kernels (adaptive pooling) have no deterministic version
        torch.use_deterministic_algorithms(True, warn_only=True)


# ------------------------------------------------------------------------------------------- helpers

def _num_classes(train_set: FERDataset, config: Config) -> int:
    if train_set.num_classes != config.data.num_classes:
        raise ValueError(f"{train_set.data_dir}: the dataset has {train_set.num_classes} classes "
                         f"({', '.join(train_set.class_names)}) but data.num_classes is {config.data.num_classes}; "
                         f"pass --set data.num_classes={train_set.num_classes}")
    return train_set.num_classes


def make_meta(config: Config, class_names: Sequence[str], best_epoch: int, best_metrics: dict[str, float],
              class_weights: Sequence[float], faces: dict[str, Any] | None = None) -> dict[str, Any]:
    """What serving, evaluation and the registry need to use the model without the training code.

    `faces`: the training data's face record (dataset.json `faces`: how its crops were made), which
    serving follows to crop faces out of photos; None for data prepared before the face step."""
    return {
        "faces": faces,
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "image_size": config.train.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "model": config.to_dict()["model"],
        "best_epoch": best_epoch,
        "val_metrics": dict(best_metrics),
        "class_weights": {name: float(w) for name, w in zip(class_names, class_weights)},
        "weights_scheme": config.weights.scheme,
    }


def _class_weights(config: Config, class_names: Sequence[str], counts: list[int],
                   weights_file: str | Path | None) -> tuple[Tensor, tuple[Any, Any, Any]]:
    """The loss's class weights and their (scheme, beta, max_weight): WEIGHTS_FILE's (checked against this
    dataset's classes and counts), else computed from the train counts with the weights section."""
    if weights_file is not None:
        given, report = read_class_weights(weights_file, class_names, counts)
        return torch.tensor(given, dtype=torch.float32), (report.get("scheme"), report.get("beta"),
                                                           report.get("max_weight"))
    weights = config.weights
    return (compute_class_weights(counts, weights.scheme, weights.beta, weights.max_weight),
            (weights.scheme, weights.beta, weights.max_weight))


def _lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {f"lr_{group.get('name', index)}": float(group["lr"]) for index, group in enumerate(optimizer.param_groups)}


# ---------------------------------------------------------------------------------------------- train

def train(config: Config, data_dir: str | Path, run_dir: str | Path, callbacks: Iterable[Any] = (),
          resume: bool = True, export: bool = True, weights_file: str | Path | None = None) -> TrainResult:
    """Train on DIR's train split, select on its val split, write the run folder; see module docstring.

    `weights_file`: the loss's class weights from a weights.json (the pipeline's class-weights step,
    `fer data weights`) instead of computing them from the train split with `weights.*`."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    cfg = config.train
    info, device = D.init_distributed(cfg.device)
    try:
        return _train(config, data_dir, run_dir, CallbackList(tuple(callbacks), enabled=info.is_main),
                      resume, export, info, device, weights_file)
    finally:
        D.shutdown(info)


def _train(config: Config, data_dir: Path, run_dir: Path, callbacks: CallbackList, resume: bool, export: bool,
           info: D.DistInfo, device: torch.device, weights_file: str | Path | None = None) -> TrainResult:
    cfg = config.train
    seed_everything(cfg.seed + info.rank, cfg.deterministic)
    checkpoint_path = run_dir / "checkpoints" / "last.pt"
    best_path = run_dir / "best.pt"
    if info.is_main:
        # a kill during a checkpoint write leaves its temporary file (~100 MB) beside the target; this run
        # owns the folder, so it clears them before writing new ones
        for stale in remove_stale_temps(checkpoint_path) + remove_stale_temps(best_path):
            logger.info("removed %s, left by an interrupted checkpoint write", stale)

    # data
    train_set = FERDataset(data_dir, "train", train_transform_from_config(cfg), cache_mb=cfg.cache_images_mb)
    val_set = FERDataset(data_dir, "val", eval_transform(cfg.image_size), cache_mb=cfg.cache_images_mb)
    num_classes = _num_classes(train_set, config)
    class_names = train_set.class_names
    faces = read_info(data_dir).get("faces")
    if faces is not None:
        FaceSettings.from_dict(faces)  # a broken record fails here, not in the server
    if len(train_set) < 2 * info.world_size:
        raise ValueError(f"{data_dir / MANIFEST}: {len(train_set)} train images are too few for "
                         f"{info.world_size} process(es) (BatchNorm needs >= 2 per batch)")
    train_sampler = EpochBatchSampler(len(train_set), cfg.batch_size, seed=cfg.seed, shuffle=True, rank=info.rank,
                                      world_size=info.world_size, max_batches=cfg.max_steps_per_epoch)
    val_sampler = EpochBatchSampler(len(val_set), config.evaluate.batch_size, shuffle=False, rank=info.rank,
                                    world_size=info.world_size)
    batches_per_epoch = train_sampler.batches_per_epoch()

    # model, loss, optimiser
    counts = train_counts(data_dir, num_classes)
    class_weights, scheme = _class_weights(config, class_names, counts, weights_file)
    model = build_model(config.model, num_classes)
    loss_fn = WeightedAddUpLoss(class_weights, config.train.mix_loss)
    # the model reaches its device before the optimiser exists: loading a checkpoint's optimiser state
    # then puts every tensor (fused Adam's `step` included) beside its parameter
    model.to(device)
    loss_fn.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_gamma)
    mix_generator = torch.Generator().manual_seed(cfg.seed * 7919 + info.rank)

    state = RunState()
    resumed = resume and checkpoint_path.is_file()
    if resumed:
        _resume_from(checkpoint_path, config, class_weights, model, optimizer, scheduler, state, mix_generator, info)
    elif config.model.pretrained:
        from fer_core.model.weights import load_backbone_weights

        report = load_backbone_weights(model, config.model.pretrained, config.model.pretrained_key_map)
        if info.is_main:
            logger.info("backbone weights: %s", report.summary())

    if cfg.compile:
        compile_model(model, cfg.compile_mode, cfg.compile_backend)
        if info.is_main:
            logger.info("torch.compile: backbone and heads (mode %s, backend %s)", cfg.compile_mode,
                        cfg.compile_backend)
    step_module: nn.Module = TrainStep(model, loss_fn, config.model.mixing)
    if info.distributed:
        # without mixing the logvar head gets no gradient: DDP must be told some parameters may be unused
        step_module = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=not config.model.mixing or cfg.mixing_warmup_epochs > 0)
    data_path, reason = choose_data_path(cfg, device, train_set, val_set)
    if info.is_main:
        logger.info("data path: %s (%s)", data_path, reason)
    if data_path == "device":
        train_loader = DeviceBatchLoader(DeviceImageCache(train_set, device), train_sampler,
                                         DeviceAugment.from_config(cfg, train=True))
        val_loader = DeviceBatchLoader(DeviceImageCache(val_set, device), val_sampler,
                                       DeviceAugment.from_config(cfg, train=False))
    else:
        train_loader = make_loader(train_set, train_sampler, cfg.workers, device, cfg.seed)
        val_loader = make_loader(val_set, val_sampler, cfg.workers, device, cfg.seed)

    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config.to_dict())
        write_json(run_dir / "weights.json", {**weights_report(*scheme, class_names, counts, class_weights.tolist()),
                                              "source": str(weights_file) if weights_file else "computed"})
        callbacks.on_train_start(TrainContext(
            config=config.to_dict(), run_dir=run_dir, data_dir=data_dir, class_names=list(class_names),
            train_counts=counts, class_weights=class_weights.tolist(), num_train=len(train_set),
            num_val=len(val_set), device=str(device), world_size=info.world_size, start_epoch=state.epoch,
            resumed=resumed, num_parameters=count_parameters(model)))

    def save_checkpoint() -> None:
        # every rank contributes its RNG and running sums; rank 0 writes
        rank_state = D.all_gather_objects({"rng": capture_rng(mix_generator), "sums": dict(state.sums)}, info)
        if info.is_main:
            save_torch({
                "format": CHECKPOINT_FORMAT, "config": config.to_dict(),
                "class_weights": class_weights.tolist(),
                "model": cpu_state_dict(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rank_state": rank_state,
                **state.saved(),
            }, checkpoint_path)
            callbacks.on_checkpoint(checkpoint_path)
        D.barrier(info)

    every = cfg.checkpoint_every_steps
    # the running sums are read on the host every train.sync_every_steps steps, and at each checkpoint
    # step, which needs them current
    def checkpoint_step(step: int) -> bool:
        return every > 0 and step % every == 0

    def on_step(current: RunState, synced: bool) -> None:
        if not synced:
            return
        if info.is_main:
            callbacks.on_step_end(current.global_step, {"train_loss_running": current.sums["loss"] /
                                                        max(current.sums["seen"], 1)})
        if checkpoint_step(current.global_step) and current.batch < batches_per_epoch:
            save_checkpoint()

    while not state.finished:
        epoch = state.epoch
        started = time.perf_counter()
        train_sampler.set_epoch(epoch)
        train_sampler.set_start(state.batch)
        (step_module.module if info.distributed else step_module).set_epoch(epoch, cfg.mixing_warmup_epochs)
        train_one_epoch(step_module, model, train_loader, optimizer, device, mix_generator, state, on_step,
                        progress=info.is_main, sync_every=cfg.sync_every_steps, sync_at=checkpoint_step)
        sums = D.all_reduce_sum(torch.tensor([state.sums["loss"], state.sums["correct"], state.sums["seen"]],
                                             dtype=torch.float64), info).tolist()
        val = evaluate_split(model, val_loader, loss_fn, device, num_classes, info)
        lrs = _lrs(optimizer)
        scheduler.step()
        seconds = time.perf_counter() - started
        entry = {
            "epoch": epoch + 1, "train_loss": sums[0] / max(sums[2], 1), "train_accuracy": sums[1] / max(sums[2], 1),
            **{f"val_{key}": value for key, value in val.items()}, **lrs, "epoch_seconds": seconds,
        }
        improved = state.end_epoch(entry, BEST_METRIC, cfg.early_stopping_patience, cfg.epochs)
        if info.is_main:
            if improved:
                save_torch({"state_dict": cpu_state_dict(model),
                            "meta": make_meta(config, class_names, epoch + 1, state.best_metrics,
                                              class_weights.tolist(), faces)}, best_path)
            logger.info("epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f mca %.4f%s (%.1fs)",
                        epoch + 1, cfg.epochs, entry["train_loss"], entry["train_accuracy"], entry["val_loss"],
                        entry["val_accuracy"], entry["val_mean_class_accuracy"], " *" if improved else "", seconds)
            write_json(run_dir / "history.json", state.history)
            callbacks.on_epoch_end(epoch + 1, entry)
        save_checkpoint()

    return _finish(config, run_dir, best_path, state, class_names, class_weights.tolist(), callbacks, info, export)


def adam(params: Any, device: torch.device, **kwargs: Any) -> torch.optim.Optimizer:
    """Adam, fused on CUDA (one kernel for every parameter); on CPU the default implementation, whose
    numbers the CPU profile's figures were measured with."""
    return torch.optim.Adam(params, **kwargs, **({"fused": True} if device.type == "cuda" else {}))


def make_optimizer(model: Any, cfg: Any, device: torch.device) -> torch.optim.Optimizer:
    """METHOD's optimiser: Adam over the backbone/heads and fc groups (train.lr, train.lr_fc); the logvar
    head in a group of its own when train.lr_logvar is set."""
    return adam(model.param_groups(cfg.lr, cfg.lr_fc, cfg.weight_decay, cfg.lr_logvar or None), device)


def choose_data_path(cfg: Any, device: torch.device, train_set: FERDataset, val_set: FERDataset) -> tuple[str, str]:
    """("cpu" | "device", why). `train.data_path` auto takes the device path on CUDA when the uint8 train
    and val splits fit `train.device_cache_mb`; `device` insists (an error saying why when they do not
    fit); `cpu` keeps DataLoader workers."""
    if cfg.data_path == "cpu":
        return "cpu", "train.data_path is cpu: DataLoader workers decode and augment"
    fits, reason = fits_on_device([train_set, val_set], cfg.device_cache_mb)
    if cfg.data_path == "device":
        if not fits:
            raise ValueError(f"train.data_path is device, but {reason}; raise train.device_cache_mb or use auto/cpu")
        return "device", reason
    if device.type != "cuda":
        return "cpu", "auto on CPU: DataLoader workers decode and augment"
    return ("device", reason) if fits else ("cpu", f"auto: {reason}")


def _resume_from(checkpoint_path: Path, config: Config, class_weights: Tensor, model: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, state: RunState, mix_generator: torch.Generator,
                 info: D.DistInfo) -> None:
    """Continue from CHECKPOINT_PATH: the model, optimiser, scheduler, run state, this rank's RNG and sums
    (ResumeError when it was written with other settings or other class weights)."""
    checkpoint = load_torch(checkpoint_path)
    check_resumable(checkpoint, config, checkpoint_path)
    saved_weights = checkpoint.get("class_weights")
    if saved_weights is not None and not torch.allclose(torch.tensor(saved_weights), class_weights):
        raise ResumeError(f"{checkpoint_path} was trained with class weights {[round(w, 4) for w in saved_weights]}, "
                          f"now {[round(w, 4) for w in class_weights.tolist()]} (another --weights file?); "
                          "resume with the same weights, or start over with --no-resume or another --out")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    state.restore(checkpoint)
    ranks = checkpoint["rank_state"]
    if len(ranks) == info.world_size:
        restore_rng(ranks[info.rank]["rng"], mix_generator)
        state.sums = dict(ranks[info.rank]["sums"])
    else:  # another world size: the data shards differ anyway, so the stream cannot be exact
        logger.warning("%s was written by %d process(es), now %d: resuming, not bit-exactly",
                       checkpoint_path, len(ranks), info.world_size)
    if state.epoch < config.train.epochs and not state.stopped_early:
        state.finished = False  # more epochs asked for than the checkpoint ran
    if info.is_main:
        logger.info("resuming %s at epoch %d, batch %d", checkpoint_path, state.epoch + 1, state.batch)


def _finish(config: Config, run_dir: Path, best_path: Path, state: RunState, class_names: list[str],
            class_weights: list[float], callbacks: CallbackList, info: D.DistInfo, export: bool) -> TrainResult:
    """Rank 0: history.json, meta.json, model.safetensors and model.pt2 from the best checkpoint; every rank: the result."""
    result = TrainResult(run_dir=run_dir, best_epoch=state.best_epoch, best_metrics=dict(state.best_metrics),
                         epochs_completed=state.epoch, stopped_early=state.stopped_early,
                         history=list(state.history), best_path=best_path)
    if info.is_main:
        write_json(run_dir / "history.json", state.history)
        best = load_torch(best_path)
        if export:
            from fer_core.model.export import WEIGHTS_FILE, write_model_files

            model = build_model(config.model, len(class_names))
            model.load_state_dict(best["state_dict"])
            write_model_files(model.eval(), run_dir, best["meta"], config.train.image_size)
            result.model_path = run_dir / WEIGHTS_FILE
        else:
            write_json(run_dir / "meta.json", best["meta"])
        callbacks.on_train_end(result)
    D.barrier(info)
    return result
