"""Tiny prepared datasets written by the tests themselves (the contract of docs/architecture.md), so the
training tests depend on no ingest code: PNGs under images/, manifest.csv, dataset.json."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_core.config import Config
from fer_core.labels import CLASS_NAMES_7
from tests.conftest import one_torch_thread

COLUMNS = ["path", "label", "label_name", "split", "source_id", "sha256", "width", "height"]


def make_prepared_dataset(root: Path, per_split: dict[str, int] | None = None, size: int = 32, seed: int = 0,
                          flip_train: int = 0) -> Path:
    """Write a prepared dataset: each class a distinct mean colour + stripes + noise (learnable).

    `flip_train` > 0 relabels that many train images to a wrong class and writes synth_truth.csv
    (name,split,label,clean_label,flipped,intensity) with source_id = name, as the synth + ingest do.
    """
    per_split = per_split or {"train": 4, "val": 1, "test": 1}
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, truth = [], []
    counts: dict[str, dict[str, int]] = {}
    for split, per_class in per_split.items():
        index = 0
        for label, name in enumerate(CLASS_NAMES_7):
            for _ in range(per_class):
                base = np.array([(label * 37) % 256, (label * 91 + 40) % 256, (label * 53 + 90) % 256], float)
                image = np.tile(base, (size, size, 1))
                image[:, :: label + 2] = 255 - base  # a class-specific stripe frequency
                image += rng.normal(0, 20, image.shape)
                pixels = np.clip(image, 0, 255).astype(np.uint8)
                rel = f"images/{split}/{split}_{index:05d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / rel)
                source_id = f"{split}_{index:05d}.jpg"
                given = label
                flipped = split == "train" and sum(t["flipped"] for t in truth) < flip_train and index % 2 == 0
                if flipped:
                    given = (label + 1) % len(CLASS_NAMES_7)
                truth.append({"name": source_id, "split": split, "label": given, "clean_label": label,
                              "flipped": int(flipped), "intensity": 0.5})
                digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
                rows.append([rel, given, CLASS_NAMES_7[given], split, source_id, digest, size, size])
                counts.setdefault(split, {}).setdefault(CLASS_NAMES_7[given], 0)
                counts[split][CLASS_NAMES_7[given]] += 1
                index += 1
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    (root / "rejected.csv").write_text("source,row,reason\n")
    (root / "dataset.json").write_text(json.dumps({
        "format": "test", "source": "tests", "num_classes": 7, "class_names": list(CLASS_NAMES_7),
        "image_size": size, "counts": counts, "num_inputs": len(rows), "num_rejected": 0,
        "carved_val": None, "dropped": {},
    }))
    if flip_train:
        with open(root / "synth_truth.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["name", "split", "label", "clean_label", "flipped", "intensity"])
            writer.writeheader()
            writer.writerows(truth)
    return root


def tiny_config(**overrides) -> Config:
    """The test profile: 32x32, batch 8, 2 epochs, ResNet-18, no workers, no mid-epoch checkpoints."""
    base = {
        "train.image_size": 32, "train.batch_size": 8, "train.epochs": 2, "train.workers": 0,
        "train.device": "cpu", "train.checkpoint_every_steps": 0, "train.early_stopping_patience": 0,
        "evaluate.batch_size": 16, "model.head_pool": 1,
    }
    base.update(overrides)
    return Config().override(base)


one_thread = pytest.fixture(autouse=True)(one_torch_thread)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """28 train / 7 val / 7 test images of 32x32, every class in every split (read-only: do not edit)."""
    return make_prepared_dataset(tmp_path_factory.mktemp("tiny_data"))
