"""Format readers: each format's own file names and codes map to the canonical order; every row is
either a sample or a rejection that names its file, row and reason."""

from __future__ import annotations

import pytest

from fer_core import labels
from fer_core.data.formats import DROPPED, ERROR, ferplus_majority, read_dataset
from fer_core.data.sources import SourceError
from tests.data.fixtures import (affectnet_row, votes_for, write_affectnet, write_fer2013, write_ferplus,
                                 write_imagefolder, write_rafdb)


def by_row(result):
    return {rejection.row: rejection for rejection in result.rejections}


def test_rafdb_codes_splits_and_bad_lines(tmp_path):
    root = write_rafdb(tmp_path, [("train_00001.jpg", 1), ("train_00002.jpg", 7), ("test_0001.jpg", 4)])
    label_file = root / "EmoLabel/list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00003.jpg 9\ntrain_00004.jpg x\n"
                          "train_00005.jpg\n\nval_0001.jpg 3\n")
    result = read_dataset("rafdb", root, 7)

    assert [(s.source_id, s.split, labels.CLASS_NAMES_7[s.label]) for s in result.samples] == [
        ("train_00001", "train", "surprise"), ("train_00002", "train", "neutral"), ("test_0001", "test", "happy")]
    assert result.samples[0].images == ("Image/aligned/train_00001_aligned.jpg", "Image/original/train_00001.jpg")
    rejected = by_row(result)
    assert set(rejected) == {"4", "5", "6", "8"}  # line 7 is blank: not an input
    assert "out of range" in rejected["4"].reason and "9" in rejected["4"].reason
    assert "not a number" in rejected["5"].reason
    assert "expected '<name> <code>'" in rejected["6"].reason
    assert "train_ nor test_" in rejected["8"].reason
    assert all(r.kind == ERROR and r.source == "EmoLabel/list_patition_label.txt" for r in result.rejections)
    assert result.num_inputs == 7
    assert result.native_splits == {"train", "test"}


def test_rafdb_missing_label_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="list_patition_label.txt"):
        read_dataset("rafdb", tmp_path, 7)


def test_unknown_format_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="unknown dataset format 'casme'"):
        read_dataset("casme", tmp_path, 7)


@pytest.mark.parametrize("num_classes", [7, 8])
def test_affectnet_codes_and_drops(tmp_path, num_classes):
    train = [affectnet_row(f"1/{code}.jpg", code) for code in range(11)]
    train += [affectnet_row("1/big.jpg", 11), affectnet_row("1/word.jpg", "happy"),
              affectnet_row("1/box.jpg", 1, box=(0, 0, -5, 10)), affectnet_row("1/up.jpg", 1)[:5]]
    root = write_affectnet(tmp_path, train, [affectnet_row("2/a.jpg", 3)])
    result = read_dataset("affectnet", root, num_classes)

    names = labels.class_names(num_classes)
    kept = {s.source_id: names[s.label] for s in result.samples}
    expected = {f"1/{code}.jpg": labels.AFFECTNET_CODES[code] for code in range(7)} | {"2/a.jpg": "surprise"}
    if num_classes == 8:
        expected["1/7.jpg"] = "contempt"
    assert kept == expected
    assert {s.split for s in result.samples if s.source == "validation.csv"} == {"test"}
    assert result.samples[0].images == ("Manually_Annotated_Images/1/0.jpg",) and result.samples[0].box == (8, 8, 40, 40)

    dropped = {"8 none": 1, "9 uncertain": 1, "10 no-face": 1} | ({"7 contempt": 1} if num_classes == 7 else {})
    assert dict(result.dropped) == dropped
    assert sum(r.kind == DROPPED for r in result.rejections) == len(dropped)
    errors = {r.row: r.reason for r in result.rejections if r.kind == ERROR}
    # header is line 1, so code k sits on line k + 2
    assert "out of range" in errors["13"] and "not a number" in errors["14"]
    assert "face box" in errors["15"] and "expected 9 columns, got 5" in errors["16"]
    assert result.num_inputs == len(train) + 1


def test_affectnet_needs_both_files_and_its_columns(tmp_path):
    root = write_affectnet(tmp_path, [affectnet_row("1/a.jpg", 1)], [])
    (root / "validation.csv").unlink()
    with pytest.raises(SourceError, match="validation.csv"):
        read_dataset("affectnet", root, 7)
    (root / "validation.csv").write_text("subDirectory_filePath,expression\n1/a.jpg,1\n")
    with pytest.raises(SourceError, match="header lacks column.*face_x"):
        read_dataset("affectnet", root, 7)


def test_fer2013_codes_usage_and_bad_rows(tmp_path):
    root = write_fer2013(tmp_path, [(0, "Training"), (3, "PublicTest"), (6, "PrivateTest"), (7, "Training"),
                                    ("x", "Training"), (1, "Other")])
    csv_file = root / "fer2013.csv"
    csv_file.write_text(csv_file.read_text() + "2,1 2 3\n")
    result = read_dataset("fer2013", root, 7)

    assert [(s.source_id, s.split, labels.CLASS_NAMES_7[s.label]) for s in result.samples] == [
        ("fer0000000", "train", "anger"), ("fer0000001", "val", "happy"), ("fer0000002", "test", "neutral")]
    rejected = by_row(result)
    assert "out of range" in rejected["5"].reason and "not a number" in rejected["6"].reason
    assert "Usage 'Other'" in rejected["7"].reason and "expected 3 columns, got 2" in rejected["8"].reason
    assert len(result.samples[0].pixels.split()) == 48 * 48


@pytest.mark.parametrize("votes, expected", [
    (votes_for("happiness", 8), "happiness"),
    ([5, 0, 5, 0, 0, 0, 0, 0, 0, 0], "no majority"),           # a tie at the top never wins
    ([4, 1, 1, 1, 1, 1, 1, 0, 0, 0], "neutral"),               # single votes are outliers, removed
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], "NF"),
    (votes_for("unknown", 6), "unknown"),
    ([2, 2, 2, 2, 2, 0, 0, 0, 0, 0], "no majority"),
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "no majority"),
])
def test_ferplus_majority_rule(votes, expected):
    assert ferplus_majority(votes) == expected


@pytest.mark.parametrize("num_classes", [7, 8])
def test_ferplus_rows_labels_and_drops(tmp_path, num_classes):
    rows = [("Training", votes_for("happiness")), ("PublicTest", votes_for("sadness")),
            ("PrivateTest", votes_for("contempt")), ("Training", votes_for("NF", 10, rest_count=0)),
            ("Training", [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]), ("Training", votes_for("unknown")),
            ("Training", [1, 2, 3, "x", 0, 0, 0, 0, 0, 0])]
    root = write_ferplus(tmp_path, rows)
    new_file = root / "fer2013new.csv"  # one more vote row than fer2013.csv has pixel rows
    new_file.write_text(new_file.read_text() + "Training,fer0000007.png,10,0,0,0,0,0,0,0,0,0\n")
    result = read_dataset("ferplus", root, num_classes)

    names = labels.class_names(num_classes)
    kept = {s.source_id: (s.split, names[s.label]) for s in result.samples}
    expected = {"fer0000000": ("train", "happy"), "fer0000001": ("val", "sad")}
    if num_classes == 8:
        expected["fer0000002"] = ("test", "contempt")
    assert kept == expected
    assert dict(result.dropped) == {"NF": 1, "no majority": 1, "unknown": 1} | (
        {"contempt": 1} if num_classes == 7 else {})
    errors = {r.row: r.reason for r in result.rejections if r.kind == ERROR}
    assert "sadness" in errors["8"] and "no matching row 8 in fer2013.csv" in errors["9"]
    assert result.num_inputs == 8


def test_imagefolder_aliases_and_strays(tmp_path):
    root = write_imagefolder(tmp_path, {
        "Train": {"Happiness": 2, "ANGRY": 1, "contempt": 1, "smirk": 2},
        "validation": {"neutral": 1},
        "extra": {"happy": 1},
    })
    (root / "README.txt").write_text("not an image")
    (root / "Train" / "loose.png").write_bytes(b"x")
    (root / "Train" / "neutral" / ".DS_Store").parent.mkdir()
    (root / "Train" / "neutral" / ".DS_Store").write_bytes(b"litter")
    result = read_dataset("imagefolder", root, 7)

    kept = sorted((s.split, labels.CLASS_NAMES_7[s.label], s.images[0]) for s in result.samples)
    assert kept == [("train", "anger", "Train/ANGRY/img_000.png"), ("train", "happy", "Train/Happiness/img_000.png"),
                    ("train", "happy", "Train/Happiness/img_001.png"), ("val", "neutral", "validation/neutral/img_000.png")]
    reasons = {(r.source, r.row): (r.kind, r.reason) for r in result.rejections}
    assert reasons[("Train/smirk", "img_000.png")][0] == ERROR
    assert "unknown class folder 'smirk'" in reasons[("Train/smirk", "img_001.png")][1]
    assert reasons[("Train/contempt", "img_000.png")][0] == DROPPED
    assert "not inside a <split>/<class>/" in reasons[("extra/happy", "img_000.png")][1]
    assert (".", "README.txt") in reasons and ("Train", "loose.png") in reasons
    assert result.num_inputs == 10  # the .DS_Store is filesystem litter, not an input
    assert result.native_splits == {"train", "val"}


def test_imagefolder_without_splits_is_a_source_error(tmp_path):
    write_imagefolder(tmp_path, {"happy": {"x": 1}})
    with pytest.raises(SourceError, match="no split folder"):
        read_dataset("imagefolder", tmp_path, 7)
