"""FERDataset, the transforms and the resumable batch sampler."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fer_core.data.dataset import EpochBatchSampler, FERDataset
from fer_core.data.prepared import ManifestError, read_manifest
from fer_core.data.images import read_image_file
from fer_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform


def test_reads_a_split_of_the_manifest(tiny_data):
    dataset = FERDataset(tiny_data, "train", eval_transform(32))
    assert len(dataset) == 28
    assert dataset.counts() == [4] * 7
    image, label = dataset[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label == dataset.rows[5].label == 1
    assert dataset.class_names[0] == "neutral"
    # the pixels are the stored PNG's, normalised with ImageNet statistics
    stored = np.asarray(Image.open(tiny_data / dataset.rows[5].path), dtype=np.float32) / 255
    expected = (stored[0, 0] - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert image[:, 0, 0].numpy() == pytest.approx(expected, abs=1e-5)


def test_ram_cache_gives_the_same_items(tiny_data):
    plain = FERDataset(tiny_data, "val", eval_transform(32))
    cached = FERDataset(tiny_data, "val", eval_transform(32), cache_mb=1)
    assert cached._cache is not None and plain._cache is None
    for index in range(len(plain)):
        assert torch.equal(plain[index][0], cached[index][0])


def _copy(tiny_data, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(tiny_data, target)
    return target


def test_missing_image_file_names_the_file_and_line(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    row = read_manifest(data)[3]
    (data / row.path).unlink()
    with pytest.raises(FileNotFoundError, match=rf"line {row.line}: image file {row.path} not found"):
        FERDataset(data, "train")


def test_bad_label_names_line_and_field(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    lines = (data / "manifest.csv").read_text().splitlines()
    fields = lines[2].split(",")
    fields[1] = "9"
    lines[2] = ",".join(fields)
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"line 3, field label: outside 0..6"):
        FERDataset(data, "train")


def test_missing_column_and_missing_split_are_clear(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    with open(data / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([row[:3] + row[4:] for row in rows])  # drop "split"
    with pytest.raises(ManifestError, match="missing column.*split"):
        FERDataset(data, "train")
    shutil.rmtree(data)
    data = _copy(tiny_data, tmp_path)
    with open(data / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([row for row in rows if row[3] != "val"])
    with pytest.raises(ManifestError, match="no rows with split 'val'"):
        FERDataset(data, "val")


def test_corrupt_image_error_names_the_row(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    row = read_manifest(data)[0]
    (data / row.path).write_bytes(b"not a png")
    dataset = FERDataset(data, "train")
    with pytest.raises(ValueError, match=rf"line {row.line} \({row.path}\)"):
        dataset[0]


def test_eval_transform_is_the_same_for_pil_and_uint8_tensor(tiny_data):
    dataset = FERDataset(tiny_data, "test")
    image = read_image_file(tiny_data / dataset.rows[0].path)
    transform = eval_transform(24)  # a real resize, not the identity
    from_pil = transform(image)
    from_tensor = transform(dataset.load_uint8(0))
    assert type(from_pil) is torch.Tensor and from_pil.shape == (3, 24, 24)
    assert torch.equal(from_pil, from_tensor)


def test_seeded_item_is_reproducible_and_leaves_global_rng_alone(tiny_data):
    dataset = FERDataset(tiny_data, "train", train_transform(32, noise_std=0.1))
    torch.manual_seed(1)
    first = dataset[(3, 1234)][0]
    after = torch.rand(1)
    torch.manual_seed(99)
    second = dataset[(3, 1234)][0]
    torch.manual_seed(1)
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(1), after)  # the item drew nothing from the caller's RNG
    assert not torch.equal(first, dataset[(3, 4321)][0])


def test_train_transform_augments(tiny_data):
    dataset = FERDataset(tiny_data, "train")
    image = dataset.load_uint8(0)
    plain = eval_transform(32)(image)
    torch.manual_seed(0)
    augmented = [train_transform(32, noise_std=0.05)(image) for _ in range(4)]
    assert all(a.shape == plain.shape for a in augmented)
    assert all(not torch.allclose(a, plain) for a in augmented)
    with pytest.raises(ValueError, match="erasing scale"):
        train_transform(32, erasing_scale=(0.5, 0.1))


def test_sampler_is_a_function_of_seed_and_epoch():
    sampler = EpochBatchSampler(30, 8, seed=3)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    assert [len(b) for b in epoch0] == [8, 8, 8, 6]
    assert sorted(i for b in epoch0 for i, _ in b) == list(range(30))
    again = EpochBatchSampler(30, 8, seed=3)
    assert list(again) == epoch0
    sampler.set_epoch(1)
    assert list(sampler) != epoch0


def test_sampler_resumes_mid_epoch_and_caps():
    sampler = EpochBatchSampler(30, 8, seed=3)
    full = list(sampler)
    sampler.set_start(2)
    assert len(sampler) == 2
    assert list(sampler) == full[2:]
    assert list(sampler) == full[2:]  # iterating twice (DataLoader's workers do) gives the same batches
    sampler.set_start(0)
    assert list(sampler) == full
    assert len(list(EpochBatchSampler(30, 8, seed=3, max_batches=2))) == 2
    # a trailing batch of one sample is dropped (BatchNorm cannot train on it)
    assert [len(b) for b in EpochBatchSampler(17, 8, seed=0)] == [8, 8]


def test_sampler_shards_ranks_equally_and_evaluation_exactly():
    shards = [list(EpochBatchSampler(31, 4, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])  # DDP needs the same number of steps on every rank
    seen = {i for shard in shards for batch in shard for i, _ in batch}
    assert seen == set(range(31))
    evaluation = [list(EpochBatchSampler(31, 4, shuffle=False, rank=r, world_size=2)) for r in range(2)]
    flat = sorted(i for shard in evaluation for batch in shard for i in batch)
    assert flat == list(range(31))  # every val image exactly once: no padding in evaluation
