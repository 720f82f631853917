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


def train_one_epoch(step_module: nn.Module, model: FERNet, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device, mix_generator: torch.Generator, state: RunState,
                    on_step: Callable[[RunState], Any], progress: bool) -> None:
    """Train over the loader's remaining batches, updating `state` (batch, global_step, sums) in place.

    `on_step(state)` runs after every optimiser step (checkpointing and callbacks live there).
    """
    model.train()
    sums = state.sums
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}", leave=False, disable=not progress, mininterval=1.0)
    for images, targets in bar:
        images, targets = to_device(images, targets, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            out = step_module(images, targets, mix_generator)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {state.epoch + 1}, batch "
                                     f"{state.batch + 1}; lower train.lr or check the data")
        loss.backward()
        optimizer.step()
        batch_size = targets.shape[0]
        sums["loss"] += loss.item() * batch_size
        sums["correct"] += (out["logits"].argmax(dim=1) == targets).sum().item()
        sums["seen"] += batch_size
        state.batch += 1
        state.global_step += 1
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        on_step(state)


@torch.no_grad()
def evaluate_split(model: FERNet, loader: DataLoader, loss_fn: WeightedAddUpLoss, device: torch.device,
                   num_classes: int, info: D.DistInfo) -> dict[str, float]:
    """Weighted loss, accuracy and mean class accuracy of a split (summed over ranks)."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for images, targets in loader:
        images, targets = to_device(images, targets, device)
        with autocast(device):
            logits = model(images)
        logits = logits.float()
        loss_sum += loss_fn(logits, targets).item() * targets.shape[0]
        pairs = (targets.cpu() * num_classes + logits.argmax(dim=1).cpu()).to(torch.int64)
        confusion += torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)
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
