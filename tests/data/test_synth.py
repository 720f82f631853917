"""`fer data synth`: RAF-DB layout, RAF-DB proportions, label noise, determinism, visible expressions."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fer_core.config import SynthConfig
from fer_core.data.synth import (
    FLIP_PARTNER,
    LIST_NAME,
    SynthError,
    TRUTH_COLUMNS,
    noise_protocol,
    parse_label_list,
    plan_samples,
    rafdb_list,
    synthesize,
)
from fer_core.data.synth_render import CUE_NAMES, expression_cues, render_face
from fer_core.labels import RAFDB_CODES

SCALE = 0.01


def read_list(root: Path) -> list[tuple[str, int]]:
    lines = (root / "EmoLabel" / LIST_NAME).read_text(encoding="utf-8").splitlines()
    return [(name, int(code)) for name, code in (line.split() for line in lines)]


def read_truth(root: Path) -> list[dict[str, str]]:
    with open(root / "synth_truth.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def all_bytes(root: Path) -> dict[str, bytes]:
    """Every output file (synth.json included) -> its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def small_list(tmp_path: Path, rows: int = 24) -> Path:
    """A tiny list in RAF-DB's format with every class in both splits."""
    lines = [f"train_{i + 1:05d}.jpg {i % 7 + 1}" for i in range(rows)]
    lines += [f"test_{i + 1:04d}.jpg {i % 7 + 1}" for i in range(rows // 2)]
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def noisy_set(tmp_path_factory) -> tuple[Path, dict]:
    """1 % of RAF-DB with the noise01 protocol, rendered by a 2-process pool."""
    out = tmp_path_factory.mktemp("synth") / "rafdb"
    summary = synthesize(out, SynthConfig(scale=SCALE, seed=0, noise="noise01"), progress=False, workers=2)
    return out, summary


def test_layout_and_names_match_the_real_list(noisy_set):
    root, summary = noisy_set
    real = {row.name: row for row in rafdb_list()}
    listed = read_list(root)
    names = [name for name, _ in listed]
    assert len(names) == len(set(names)) == summary["num_images"] > 100
    assert set(names) <= set(real)
    assert names == sorted(names, key=lambda name: real[name].index)  # the real list's order
    images = sorted(p.name for p in (root / "Image" / "aligned").iterdir())
    assert images == sorted(f"{Path(name).stem}_aligned.jpg" for name in names)
    assert {name.split("_")[0] for name in names} == {"train", "test"}


def test_class_proportions_follow_rafdb_per_split(noisy_set):
    root, _ = noisy_set
    full = Counter((row.split, row.code) for row in rafdb_list())
    clean = Counter((row["split"], int(row["clean_label"])) for row in read_truth(root))
    assert set(clean) == set(full)  # every class in every split, even fear in test (74 rows)
    for key, count in full.items():
        assert clean[key] == max(1, round(count * SCALE)), key
    # The imbalance is RAF-DB's: happy is the largest class and fear the smallest in train.
    train = {code: n for (split, code), n in clean.items() if split == "train"}
    assert max(train, key=train.get) == 4 and min(train, key=train.get) == 2


def test_images_are_100x100_rgb_jpeg(noisy_set):
    root, _ = noisy_set
    for path in (root / "Image" / "aligned").iterdir():
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (100, 100)), path


def test_noise_protocol_flips_exactly_the_rows_that_differ(noisy_set):
    root, summary = noisy_set
    clean = {row.name: row.code for row in rafdb_list()}
    noisy = noise_protocol("noise01")
    truth = read_truth(root)
    for row in truth:
        expected = noisy[row["name"]] if row["split"] == "train" else clean[row["name"]]
        assert int(row["label"]) == expected, row
        assert int(row["clean_label"]) == clean[row["name"]], row
        assert row["flipped"] == str(int(expected != clean[row["name"]])), row
    assert summary["num_flipped"] == sum(row["flipped"] == "1" for row in truth) > 0
    # On the full list, without rendering: the flipped set is exactly the differing rows (1,241).
    samples = plan_samples(SynthConfig(noise="noise01"))
    differing = {name for name, code in noisy.items() if code != clean[name]}
    assert {s.name for s in samples if s.flipped} == differing
    assert len(differing) == 1241


def test_noise_rate_flips_that_share_of_train_rows_only():
    samples = plan_samples(SynthConfig(noise_rate=0.2, seed=7))
    train = [s for s in samples if s.split == "train"]
    flipped = [s for s in samples if s.flipped]
    assert len(flipped) == round(0.2 * len(train))
    assert all(s.split == "train" and s.code != s.clean_code for s in flipped)
    # Flips go to every other class, not to one favourite.
    assert len({s.code for s in flipped}) == 7
    other_seed = {s.name for s in plan_samples(SynthConfig(noise_rate=0.2, seed=8)) if s.flipped}
    assert other_seed != {s.name for s in flipped}


def test_confusable_noise_flips_each_label_to_its_partner():
    """Class-dependent noise: the same rows as uniform noise flip, each to its confusable partner."""
    uniform = plan_samples(SynthConfig(noise_rate=0.3, seed=7))
    confusable = plan_samples(SynthConfig(noise_rate=0.3, seed=7, noise_kind="confusable"))
    assert [s.flipped for s in uniform] == [s.flipped for s in confusable]
    flipped = [s for s in confusable if s.flipped]
    assert flipped and all(RAFDB_CODES[s.code] == FLIP_PARTNER[RAFDB_CODES[s.clean_code]] for s in flipped)
    assert Counter((RAFDB_CODES[s.clean_code], RAFDB_CODES[s.code]) for s in flipped)[("fear", "surprise")] > 0
    with pytest.raises(SynthError, match="noise_kind"):
        plan_samples(SynthConfig(noise_rate=0.3, noise_kind="sideways"))


def test_sidecar_is_consistent_with_the_list(noisy_set):
    root, _ = noisy_set
    truth = read_truth(root)
    assert tuple(truth[0]) == TRUTH_COLUMNS
    assert [(row["name"], int(row["label"])) for row in truth] == read_list(root)
    for row in truth:
        assert row["clean_label_name"] == RAFDB_CODES[int(row["clean_label"])]
        assert row["label_name"] == RAFDB_CODES[int(row["label"])]
        assert row["flipped"] == str(int(row["label"] != row["clean_label"]))
        assert row["split"] == row["name"].split("_")[0]
        assert 0.0 <= float(row["intensity"]) <= 1.0
        assert row["cue_partner"] in RAFDB_CODES.values() and row["cue_partner"] != row["clean_label_name"]
    intensities = [float(row["intensity"]) for row in truth]
    assert min(intensities) < 0.4 < 0.8 < max(intensities)  # weak and strong faces both occur


def test_same_seed_same_bytes_any_worker_count(noisy_set, tmp_path):
    root, _ = noisy_set
    again = tmp_path / "again"
    synthesize(again, SynthConfig(scale=SCALE, seed=0, noise="noise01"), progress=False, workers=1)
    assert all_bytes(again) == all_bytes(root)


def test_different_seed_gives_different_images(tmp_path):
    listing = small_list(tmp_path)
    first = all_bytes_of(synthesize(tmp_path / "a", SynthConfig(seed=1), progress=False, workers=1,
                                    list_file=listing))
    second = all_bytes_of(synthesize(tmp_path / "b", SynthConfig(seed=2), progress=False, workers=1,
                                     list_file=listing))
    images = [key for key in first if key.endswith(".jpg")]
    assert images and all(first[key] != second[key] for key in images)
    assert first[f"EmoLabel/{LIST_NAME}"] == second[f"EmoLabel/{LIST_NAME}"]  # same names and labels


def all_bytes_of(summary: dict) -> dict[str, bytes]:
    return all_bytes(Path(summary["out_dir"]))


def test_a_scaled_set_holds_the_same_pictures_as_the_full_one(tmp_path):
    listing = small_list(tmp_path, rows=28)
    full = all_bytes_of(synthesize(tmp_path / "full", SynthConfig(seed=3), progress=False, workers=1,
                                   list_file=listing))
    half = all_bytes_of(synthesize(tmp_path / "half", SynthConfig(seed=3, scale=0.5), progress=False,
                                   workers=1, list_file=listing))
    images = [key for key in half if key.endswith(".jpg")]
    assert 0 < len(images) < len([key for key in full if key.endswith(".jpg")])
    assert all(half[key] == full[key] for key in images)


def test_image_size_is_configurable(tmp_path):
    synthesize(tmp_path / "s", SynthConfig(image_size=48, scale=0.3), progress=False, workers=1,
               list_file=small_list(tmp_path))
    for path in (tmp_path / "s" / "Image" / "aligned").iterdir():
        with Image.open(path) as image:
            assert image.size == (48, 48)


def paired_difference(first: str, second: str, pairs: int = 16) -> np.ndarray:
    """Mean |first - second| per pixel over faces that share person and scene (same seed)."""
    diffs = []
    for i in range(pairs):
        a = render_face(first, 0.9, np.random.default_rng([11, i]), 100).convert("L")
        b = render_face(second, 0.9, np.random.default_rng([11, i]), 100).convert("L")
        diffs.append(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)))
    return np.mean(diffs, axis=0)


def test_happy_and_sad_differ_in_the_mouth_region():
    diff = paired_difference("happy", "sad")
    mouth, forehead_and_background = diff[62:90, 25:75].mean(), diff[:15].mean()
    assert mouth > 1.5 and mouth > 5 * forehead_and_background
    assert paired_difference("happy", "happy", pairs=3).max() == 0.0  # same seed, same picture


def test_surprise_shows_in_the_eyes_and_brows():
    diff = paired_difference("surprise", "neutral")
    assert diff[25:50, 15:85].mean() > 2.0 > diff[:15].mean()


def test_weak_faces_drift_towards_neutral_and_confusable_pairs_merge():
    def mean_cues(expression: str, intensity: float) -> np.ndarray:
        draws = [expression_cues(expression, intensity, np.random.default_rng([0, i])) for i in range(50)]
        return np.array([np.mean([d[k] for d in draws]) for k in CUE_NAMES])

    def distance(first: str, second: str, intensity: float) -> float:
        return float(np.linalg.norm(mean_cues(first, intensity) - mean_cues(second, intensity)))

    assert not mean_cues("neutral", 1.0).any()
    for expression in ("happy", "sad", "surprise", "fear", "disgust", "anger"):
        weak, strong = (float(np.linalg.norm(mean_cues(expression, t))) for t in (0.15, 1.0))
        assert 0 < weak < 0.6 * strong, expression
    # Strong fear/surprise and disgust/anger are told apart; weak ones nearly merge, more than with
    # an unrelated class at the same intensity.
    for first, second in (("fear", "surprise"), ("disgust", "anger")):
        assert distance(first, second, 0.15) < 0.15 * distance(first, second, 1.0)
        assert distance(first, second, 0.15) < 0.5 * distance(first, "happy", 0.15)


@pytest.mark.parametrize("line, fragment", [
    ("train_00001.jpg 9", "row 2: label 9 of train_00001.jpg out of range"),
    ("train_00001.jpg", "row 2: expected '<name> <code>'"),
    ("val_00001.jpg 3", "row 2: image name 'val_00001.jpg' starts with neither"),
    ("train_00001.jpg 3", "row 2: 'train_00001.jpg' is listed twice"),
])
def test_a_bad_list_row_is_named(line, fragment):
    with pytest.raises(SynthError, match="my_list.txt") as error:
        parse_label_list(f"train_00001.jpg 4\n{line}\n", "my_list.txt")
    assert fragment in str(error.value)


def test_bad_choices_are_refused(tmp_path):
    with pytest.raises(SynthError, match="not both"):
        plan_samples(SynthConfig(noise="noise02", noise_rate=0.1))
    with pytest.raises(SynthError, match="unknown noise protocol 'noise09'"):
        plan_samples(SynthConfig(noise="noise09"))
    with pytest.raises(SynthError, match=r"synth.scale must be in \(0, 1\], got 0.0"):
        plan_samples(SynthConfig(scale=0.0))
    with pytest.raises(SynthError, match="label list not found"):
        synthesize(tmp_path / "x", SynthConfig(), progress=False, list_file=tmp_path / "missing.txt")


def test_never_replaces_a_folder_it_did_not_make(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious", encoding="utf-8")
    with pytest.raises(SynthError, match="not made by `fer data synth`"):
        synthesize(foreign, SynthConfig(), progress=False, list_file=small_list(tmp_path))
    assert (foreign / "thesis.tex").read_text(encoding="utf-8") == "precious"
    ours = tmp_path / "ours"
    listing = small_list(tmp_path)
    synthesize(ours, SynthConfig(seed=1), progress=False, workers=1, list_file=listing)
    synthesize(ours, SynthConfig(seed=1, scale=0.5), progress=False, workers=1, list_file=listing)
    assert len(read_list(ours)) < 36  # the second run replaced the first


def test_cli_flags_override_the_config(tmp_path):
    from fer_cli.main import cli

    out = tmp_path / "cli"
    result = CliRunner().invoke(cli, [
        "data", "synth", "--out", str(out), "--list", str(small_list(tmp_path)), "--seed", "5",
        "--noise-rate", "0.25", "--image-size", "64", "--workers", "1", "--set", "synth.noise=noise01",
    ])
    assert result.exit_code == 0, result.output
    assert "wrote 36 faces (6 labels flipped)" in result.output
    truth = read_truth(out)
    assert sum(row["flipped"] == "1" for row in truth) == 6  # round(0.25 * 24 train rows)
    with Image.open(out / "Image" / "aligned" / "train_00001_aligned.jpg") as image:
        assert image.size == (64, 64)

    bad = tmp_path / "bad.txt"
    bad.write_text("train_00001.jpg 8\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "no"), "--list", str(bad)])
    assert result.exit_code == 1
    assert "bad.txt row 1: label 8 of train_00001.jpg out of range" in result.output
    assert not (tmp_path / "no").exists()


def test_the_rafdb_reader_reads_it_like_real_rafdb(noisy_set):
    """The contract with ingest: every row is a usable sample, with the list's labels and images."""
    formats = pytest.importorskip("fer_core.data.formats")
    from fer_core.labels import CLASS_NAMES_7

    root, summary = noisy_set
    result = formats.read_dataset("rafdb", root, 7)
    assert result.rejections == []
    assert len(result.samples) == summary["num_images"]
    listed = dict(read_list(root))
    for sample in result.samples:
        assert (root / sample.images[0]).is_file()
        assert CLASS_NAMES_7[sample.label] == RAFDB_CODES[listed[f"{sample.source_id}.jpg"]]
