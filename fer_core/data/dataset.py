"""The torch side of a prepared dataset: `FERDataset` (manifest rows -> image tensor, label) and the
batch sampler training uses.

Reproducibility is built in here rather than in the engine: `EpochBatchSampler` yields
`(index, sample_seed)` pairs whose order and seeds are a pure function of (seed, epoch), and the
dataset runs its random transform under that seed. A run therefore augments the same way whatever the
number of DataLoader workers, and a run resumed in the middle of an epoch sees exactly the batches the
uninterrupted run would have seen.

The prepared dataset's files, columns and reader are fer_core.data.prepared's (the contract).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fer_core.data.images import ImageDecodeError, read_image_file
from fer_core.data.prepared import DATASET_JSON, MANIFEST, SPLITS, ManifestError, read_class_names, read_manifest

SampleKey = int | tuple[int, int]


class FERDataset(Dataset):
    """One split of a prepared dataset: item -> (float image tensor [3,S,S], label).

    `cache_mb` > 0 decodes the whole split once into one uint8 tensor when it fits in that many MiB
    (stored images all have one size, so this is N*3*H*W bytes); DataLoader workers forked later share
    it copy-on-write instead of each decoding every PNG again every epoch.
    A key may be an index or `(index, seed)`: with a seed, the (random) transform runs under
    `torch.manual_seed(seed)` in a forked RNG, so the caller's RNG stream is left untouched.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        num_classes: int | None = None,
        cache_mb: int = 0,
        check_files: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.data_dir = Path(data_dir)
        self.split = split
        self.transform = transform
        self.class_names = read_class_names(self.data_dir, num_classes or 7)
        self.num_classes = num_classes or len(self.class_names)
        if len(self.class_names) != self.num_classes:
            raise ManifestError(f"{self.data_dir / DATASET_JSON}: {len(self.class_names)} class_names but "
                                f"num_classes is {self.num_classes}")
        self.rows = [r for r in read_manifest(self.data_dir, self.num_classes) if r.split == split]
        if not self.rows:
            raise ManifestError(f"{self.data_dir / MANIFEST}: no rows with split {split!r}")
        if check_files:
            self._check_files()
        self.labels: list[int] = [row.label for row in self.rows]
        self._cache: torch.Tensor | None = None
        if cache_mb > 0:
            self.preload(cache_mb)

    def _check_files(self) -> None:
        for row in self.rows:
            if not (self.data_dir / row.path).is_file():
                raise FileNotFoundError(f"{self.data_dir / MANIFEST} line {row.line}: image file "
                                        f"{row.path} not found under {self.data_dir}")

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> list[int]:
        """Images per class in this split, in class index order."""
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.num_classes).tolist()

    def load_uint8(self, index: int) -> torch.Tensor:
        """Decoded stored image as uint8 [3,H,W] (from the cache when preloaded)."""
        if self._cache is not None:
            return self._cache[index]
        row = self.rows[index]
        try:
            image = read_image_file(self.data_dir / row.path)
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"{self.data_dir / MANIFEST} line {row.line} ({row.path}): {exc}") from None
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()

    def preload(self, cache_mb: int) -> bool:
        """Decode the split into RAM if all images share one size and fit in cache_mb MiB."""
        sizes = {(row.width, row.height) for row in self.rows}
        if len(sizes) != 1 or 0 in next(iter(sizes)):
            return False  # mixed or unknown sizes: decode on the fly
        width, height = next(iter(sizes))
        if len(self.rows) * 3 * width * height > cache_mb * 2**20:
            return False
        cache = torch.empty((len(self.rows), 3, height, width), dtype=torch.uint8)
        for index in range(len(self.rows)):
            image = self.load_uint8(index)
            if tuple(image.shape) != (3, height, width):
                row = self.rows[index]
                raise ManifestError(f"{self.data_dir / MANIFEST} line {row.line} ({row.path}): stored image is "
                                    f"{image.shape[2]}x{image.shape[1]}, manifest says {width}x{height}")
            cache[index] = image
        self._cache = cache
        return True

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.load_uint8(index)
        if self.transform is None:
            return image, self.labels[index]
        if seed is None:
            return self.transform(image), self.labels[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), self.labels[index]


class EpochBatchSampler(Sampler[list[SampleKey]]):
    """Batches of one epoch, a pure function of (seed, epoch): resumable and rank-sharded.

    shuffle=True (training): a seeded permutation, padded so every rank has the same number of
    batches (DDP needs equal step counts), a trailing batch smaller than `min_batch` dropped
    (BatchNorm cannot train on one sample), optionally capped at `max_batches`, each index paired with
    a per-sample augmentation seed. shuffle=False (evaluation): dataset order, rank-strided with no
    padding, plain indices. `set_start(k)` skips the first k batches of each epoch until reset (resume mid-epoch).
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, min_batch: int = 2, max_batches: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.min_batch = min_batch if shuffle else 1
        self.max_batches = max_batches
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start_batch: int) -> None:
        self.start = start_batch

    def _epoch_batches(self) -> list[list[SampleKey]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
            seeds = torch.randint(0, 2**62, (self.num_samples,), generator=generator).tolist()
            per_rank = math.ceil(self.num_samples / self.world_size)
            padded = (order * math.ceil(per_rank * self.world_size / self.num_samples))[: per_rank * self.world_size]
            keys: list[SampleKey] = [(i, seeds[i]) for i in padded[self.rank::self.world_size]]
        else:
            keys = list(range(self.num_samples))[self.rank::self.world_size]
        batches = [keys[i:i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        if batches and len(batches[-1]) < self.min_batch:
            batches.pop()
        if self.max_batches > 0:
            batches = batches[: self.max_batches]
        return batches

    def batches_per_epoch(self) -> int:
        return len(self._epoch_batches())

    def __iter__(self) -> Iterator[list[SampleKey]]:
        # no reset of `start` here: DataLoader may call iter() twice for one epoch (its multi-process
        # iterator does); the engine sets the start before every epoch
        return iter(self._epoch_batches()[self.start:])

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start)

