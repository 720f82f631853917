"""The training step and the loops over batches: `TrainStep` (the mixing step as a module DDP can wrap),
`train_one_epoch` (one pass of the train loader with the weighted loss and Adam) and `evaluate_split`
(loss and accuracies of a split, summed over ranks). The epoch loop, resume and export are engine.py's.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fer_core import metrics as M
from fer_core.data.dataset import EpochBatchSampler, FERDataset
from fer_core.model import FERNet
from fer_core.training import distributed as D
from fer_core.training.losses import WeightedAddUpLoss
from fer_core.training.resume import RunState
from fer_core.training.step import training_step


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU (CPU bf16 is slower there and changes the numbers)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_model(model: FERNet, mode: str = "default", backend: str = "inductor") -> None:
    """torch.compile the backbone and both uncertainty heads in place. `nn.Module.compile` keeps the
    state_dict's keys, so checkpoints, resume and export see the eager model's; the mixing, the
    classifier and the loss stay eager (small, and the mixing draws from a generator)."""
    options = {"mode": mode} if backend == "inductor" else {}   # a mode is inductor's notion
    for module in (model.backbone, model.mu_head, model.logvar_head):
        module.compile(backend=backend, **options)


def to_device(images: Tensor, targets: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    if device.type == "cuda":
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        return images, targets.to(device, non_blocking=True)
    return images, targets


class TrainStep(nn.Module):
    """The mixing step as a module, so DDP wraps it: DDP only syncs gradients of work done inside
    its own forward, and the step calls `encode`/`classify`, not the model's forward."""

    def __init__(self, model: FERNet, loss_fn: WeightedAddUpLoss, mixing: bool) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.configured_mixing = mixing
        self.mixing = mixing

    def forward(self, images: Tensor, targets: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return training_step(self.model, images, targets, self.loss_fn, self.mixing, generator)

    def set_epoch(self, epoch: int, warmup_epochs: int) -> None:
        """Mixing starts after `warmup_epochs` epochs of the weighted loss on mu (0 = from the start)."""
        self.mixing = self.configured_mixing and epoch >= warmup_epochs


def make_loader(dataset: FERDataset, sampler: EpochBatchSampler, workers: int, device: torch.device,
                seed: int) -> DataLoader:
    # Its own generator: creating an iterator then draws no number from torch's global RNG, which
    # must stay exactly where the checkpoint left it.
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))


class StepSums:
    """An epoch's running train loss and correct count, kept on the device: adding a step's figures
    costs no host synchronisation; `flush_into` reads them (one sync) into the run state's sums and
    raises if a loss since the last flush was not finite. The steps between a non-finite loss and that
    read (fewer than train.sync_every_steps) have already updated the weights: the run stops there,
    and its last checkpoint (written at a read, before them) is what a resume starts from."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.seen = 0

    def add(self, loss: Tensor, logits: Tensor, targets: Tensor) -> None:
        batch_size = targets.shape[0]
        detached = loss.detach()
        self.finite &= torch.isfinite(detached)
        self.loss += detached.double() * batch_size
        self.correct += (logits.argmax(dim=1) == targets).sum()
        self.seen += batch_size

    def flush_into(self, state: RunState, first_step: int) -> None:
        if self.seen == 0:
            return
        # one read (one synchronisation) for the three figures
        loss, correct, finite = torch.stack([self.loss, self.correct.double(), self.finite.double()]).tolist()
        correct, finite = int(correct), bool(finite)
        if not finite:
            raise FloatingPointError(f"the loss was not finite at epoch {state.epoch + 1}, batches {first_step + 1}-"
                                     f"{state.batch}; lower train.lr or check the data")
        state.sums["loss"] += loss
        state.sums["correct"] += correct
        state.sums["seen"] += self.seen
        self.loss.zero_(), self.correct.zero_()
        self.seen = 0


def train_one_epoch(step_module: nn.Module, model: FERNet, loader: Any, optimizer: torch.optim.Optimizer,
                    device: torch.device, mix_generator: torch.Generator, state: RunState,
                    on_step: Callable[[RunState, bool], Any], progress: bool, sync_every: int = 1,
                    sync_at: Callable[[int], bool] | None = None) -> None:
    """Train over the loader's remaining batches, updating `state` (batch, global_step, sums) in place.

    The step's figures stay on the device; every `sync_every` optimiser steps and at the epoch's end
    they are read into `state.sums` (the only host synchronisation of the loop), and also after a step
    whose global number `sync_at` accepts (a checkpoint's). `on_step(state, synced)`
    runs after every optimiser step, `synced` telling whether `state.sums` is current (checkpointing
    and callbacks live there and act on synced steps).
    """
    if sync_every < 1:
        raise ValueError(f"sync_every must be >= 1, got {sync_every}")
    model.train()
    sums = StepSums(device)
    flushed_at = state.batch
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}", leave=False, disable=not progress, mininterval=1.0)
    remaining = len(loader)
    for index, (images, targets) in enumerate(bar):
        images, targets = to_device(images, targets, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            out = step_module(images, targets, mix_generator)
        loss = out["loss"]
        loss.backward()
        optimizer.step()
        sums.add(loss, out["logits"], targets)
        state.batch += 1
        state.global_step += 1
        synced = (state.global_step % sync_every == 0 or index + 1 == remaining
                  or (sync_at is not None and sync_at(state.global_step)))
        if synced:
            sums.flush_into(state, flushed_at)
            flushed_at = state.batch
            bar.set_postfix(loss=f"{state.sums['loss'] / max(state.sums['seen'], 1):.3f}", refresh=False)
        on_step(state, synced)


@torch.no_grad()
def evaluate_split(model: FERNet, loader: DataLoader, loss_fn: WeightedAddUpLoss, device: torch.device,
                   num_classes: int, info: D.DistInfo) -> dict[str, float]:
    """Weighted loss, accuracy and mean class accuracy of a split (summed over ranks)."""
    model.eval()
    # on the device until the end: one host synchronisation per split, not one per batch
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for images, targets in loader:
        images, targets = to_device(images, targets, device)
        with autocast(device):
            logits = model(images)
        logits = logits.float()
        loss_sum += loss_fn(logits, targets).double() * targets.shape[0]
        pairs = targets.to(torch.int64) * num_classes + logits.argmax(dim=1)
        # a one-hot sum, not bincount: CUDA's bincount counts with atomics and is flagged as
        # non-deterministic under train.deterministic (a warning per batch)
        confusion += torch.nn.functional.one_hot(pairs, num_classes**2).sum(dim=0)
    confusion = confusion.reshape(num_classes, num_classes).cpu().to(torch.float64)
    loss_sum = loss_sum.cpu()
    D.all_reduce_sum(confusion, info)
    D.all_reduce_sum(loss_sum, info)
    counts = confusion.numpy().astype(np.int64)
    total = int(counts.sum())
    return {
        "loss": float(loss_sum) / max(total, 1),
        "accuracy": M.accuracy(counts),
        "mean_class_accuracy": M.mean_class_accuracy(counts),
        "macro_f1": M.macro_f1(counts),
    }
