"""Class weights on RAF-DB's real train counts: each scheme's formula, the mean-1 invariant, the clip."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

import fer_core
from fer_core.labels import CLASS_NAMES_7, RAFDB_CODES
from fer_core.data.prepared import train_counts
from fer_core.training.class_weights import compute_class_weights

RAFDB_LIST = Path(fer_core.__file__).parent / "data" / "rafdb_lists" / "list_patition_label.txt"


def rafdb_train_counts() -> list[int]:
    """Canonical-order train counts from RAF-DB's own partition list (train_* rows)."""
    counts = [0] * 7
    for line in RAFDB_LIST.read_text().splitlines():
        if line.startswith("train_"):
            name, code = line.split()
            counts[CLASS_NAMES_7.index(RAFDB_CODES[int(code)])] += 1
    return counts


COUNTS = rafdb_train_counts()
TOTAL = sum(COUNTS)


def weighted_mean(weights: torch.Tensor, counts: list[int]) -> float:
    return float(sum(n * w for n, w in zip(counts, weights.double().tolist())) / sum(counts))


def test_rafdb_counts_are_the_published_ones():
    # neutral, happy, sad, surprise, fear, disgust, anger (RAF-DB basic train split, 12271 images)
    assert COUNTS == [2524, 4772, 1982, 1290, 281, 717, 705]


def test_inverse_is_total_over_k_times_count():
    weights = compute_class_weights(COUNTS, "inverse")
    expected = torch.tensor([TOTAL / (7 * n) for n in COUNTS], dtype=torch.float32)
    assert weights.dtype == torch.float32 and weights.shape == (7,)
    torch.testing.assert_close(weights, expected)
    assert int(weights.argmax()) == CLASS_NAMES_7.index("fear")  # the smallest class costs most
    assert int(weights.argmin()) == CLASS_NAMES_7.index("happy")


def test_sqrt_inverse_formula():
    weights = compute_class_weights(COUNTS, "sqrt_inverse")
    root_sum = sum(math.sqrt(n) for n in COUNTS)
    expected = torch.tensor([TOTAL / (math.sqrt(n) * root_sum) for n in COUNTS], dtype=torch.float32)
    torch.testing.assert_close(weights, expected)


@pytest.mark.parametrize("beta", [0.999, 0.9999])
def test_effective_number_formula(beta):
    weights = compute_class_weights(COUNTS, "effective_number", beta=beta)
    raw = [(1 - beta) / (1 - beta ** n) for n in COUNTS]
    scale = TOTAL / sum(n * r for n, r in zip(COUNTS, raw))
    torch.testing.assert_close(weights, torch.tensor([r * scale for r in raw], dtype=torch.float32))
    # ratios follow (1 - beta^n_j) / (1 - beta^n_i): flatter than inverse for large classes
    inverse = compute_class_weights(COUNTS, "inverse")
    assert float(weights.max() / weights.min()) < float(inverse.max() / inverse.min())


def test_none_is_all_ones():
    torch.testing.assert_close(compute_class_weights(COUNTS, "none"), torch.ones(7))


@pytest.mark.parametrize("scheme", ["inverse", "sqrt_inverse", "effective_number", "none"])
def test_count_weighted_mean_is_one(scheme):
    assert weighted_mean(compute_class_weights(COUNTS, scheme), COUNTS) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("max_weight", [1.5, 3.0])
def test_max_weight_clips_and_keeps_the_mean(max_weight):
    unclipped = compute_class_weights(COUNTS, "inverse")
    weights = compute_class_weights(COUNTS, "inverse", max_weight=max_weight)
    assert float(weights.max()) == pytest.approx(max_weight)
    assert bool((weights <= max_weight + 1e-6).all())
    assert weighted_mean(weights, COUNTS) == pytest.approx(1.0, abs=1e-6)
    free = unclipped < max_weight
    free &= weights < max_weight - 1e-6
    # classes under the cap keep their ratios to each other (one common scale factor)
    ratios = weights[free] / unclipped[free]
    torch.testing.assert_close(ratios, torch.full_like(ratios, float(ratios[0])))
    assert float(ratios[0]) > 1.0  # they were scaled up to restore the mean


def test_max_weight_above_every_weight_changes_nothing():
    torch.testing.assert_close(compute_class_weights(COUNTS, "inverse", max_weight=100.0),
                               compute_class_weights(COUNTS, "inverse"))


def test_max_weight_below_one_is_refused():
    with pytest.raises(ValueError, match="max_weight=0.5"):
        compute_class_weights(COUNTS, "inverse", max_weight=0.5)


def test_count_zero_names_the_class():
    with pytest.raises(ValueError, match="class 4 has 0 training samples"):
        compute_class_weights([10, 20, 30, 40, 0, 5, 6], "inverse")


@pytest.mark.parametrize("counts, scheme, message", [
    ([], "inverse", "empty"),
    ([3, -1], "inverse", "class 1"),
    ([3, 4], "focal", "unknown class weight scheme 'focal'"),
])
def test_bad_input(counts, scheme, message):
    with pytest.raises(ValueError, match=message):
        compute_class_weights(counts, scheme)


def test_bad_beta():
    with pytest.raises(ValueError, match="weights.beta"):
        compute_class_weights([3, 4], "effective_number", beta=1.0)


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "label_name", "split", "source_id", "sha256", "width", "height"])
        for index, (label, split) in enumerate(rows):
            writer.writerow([f"images/{index}.png", label, "x", split, str(index), "0" * 64, 32, 32])
    return path


def test_train_counts_reads_only_train_rows(tmp_path):
    manifest = write_manifest(tmp_path / "manifest.csv",
                              [("0", "train"), ("2", "train"), ("2", "train"), ("1", "val"), ("1", "test")])
    assert train_counts(manifest.parent, 3) == [1, 0, 2]


def test_train_counts_names_the_bad_row(tmp_path):
    manifest = write_manifest(tmp_path / "manifest.csv", [("0", "train"), ("9", "train")])
    with pytest.raises(ValueError, match="manifest.csv line 3, field label: outside 0..6 .value '9'."):
        train_counts(manifest.parent, 7)
    manifest = write_manifest(tmp_path / "manifest.csv", [("happy", "train")])
    with pytest.raises(ValueError, match="line 2, field label: not an integer .value 'happy'."):
        train_counts(manifest.parent, 7)


def test_train_counts_needs_the_columns(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("path,label\na.png,0\n")
    with pytest.raises(ValueError, match="missing column"):
        train_counts(tmp_path, 7)


def test_the_class_weights_step_plots_weights_above_one_and_the_split_distribution(tmp_path):
    """The weights plot has room for weights far above 1 (the y-axis once stopped at 1.05, cutting
    fear's bar), and the step draws the class distribution of every split."""
    import matplotlib.image
    import numpy as np

    from fer_core.config import Config
    from fer_core.steps import class_weights_step

    rows = [("0", "train")] * 40 + [("4", "train")] * 2 + [(str(c), "train") for c in (1, 2, 3, 5, 6)] * 8
    rows += [("0", "val"), ("4", "test"), ("1", "test")]
    (tmp_path / "data").mkdir()
    write_manifest(tmp_path / "data" / "manifest.csv", rows)
    result = class_weights_step(tmp_path / "data", tmp_path / "out" / "weights.json", Config())
    assert result["weights"]["fear"] > 3
    for name in ("weights.png", "class_distribution.png"):
        image = matplotlib.image.imread(tmp_path / "out" / name)
        assert image.shape[0] > 200 and image[..., :3].std() > 0.05, name  # a real picture
    image = matplotlib.image.imread(tmp_path / "out" / "weights.png")[..., :3]
    blue = np.all(np.abs(image - np.array([0.12, 0.47, 0.71])) < 0.05, axis=2)   # the bars (tab:blue)
    frame = np.where((image.max(axis=2) < 0.2).mean(axis=1) > 0.5)[0]           # the axes' top and bottom lines
    assert frame.size and blue.any()
    tallest_bar_top = np.where(blue.any(axis=1))[0].min()
    assert tallest_bar_top > frame.min() + 10, "the tallest bar reaches the top of the axes: cut off"
