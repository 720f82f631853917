"""`validate_dataset` and `fer data validate` on small prepared datasets these tests write themselves.

Each critical check gets a dataset broken in exactly one way; the test asserts that check (and only the
expected ones) fail, and that the message names the offending row/path/value.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fer_core.config import ValidateConfig
from fer_core.labels import class_names
from fer_core.validation import ManifestNotFoundError, validate_dataset

COLUMNS = ["path", "label", "label_name", "split", "source_id", "sha256", "width", "height"]
PER_CLASS = {"train": 3, "val": 1, "test": 1}
SIDE = 32
# A config under which the clean dataset raises no warnings either (it is tiny on purpose).
QUIET = ValidateConfig(tiny_class_warn=1)


def _write_png(path: Path, seed: int, size: tuple[int, int] = (SIDE, SIDE)) -> str:
    """A small distinct PNG; returns its sha256 (as ingest stores it)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Dataset:
    """A prepared dataset under `root` whose rows a test edits before calling write()."""

    root: Path
    rows: list[dict[str, str]]
    rejected: list[dict[str, str]] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def write(self) -> Path:
        with open(self.root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        with open(self.root / "rejected.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["source", "row", "kind", "reason"])
            writer.writeheader()
            writer.writerows(self.rejected)
        (self.root / "dataset.json").write_text(json.dumps(self.info), encoding="utf-8")
        return self.root

    def row(self, split: str, label: int, nth: int = 0) -> dict[str, str]:
        matches = [r for r in self.rows if r["split"] == split and r["label"] == str(label)]
        return matches[nth]


@pytest.fixture
def dataset(tmp_path) -> Dataset:
    """7 classes x (3 train, 1 val, 1 test) distinct 32x32 PNGs with a correct manifest."""
    root = tmp_path / "prepared"
    names = class_names(7)
    rows = []
    seed = 0
    for split, per_class in PER_CLASS.items():
        for label, name in enumerate(names):
            for index in range(per_class):
                relative = f"images/{split}/{name}/{index:03d}.png"
                sha = _write_png(root / relative, seed)
                rows.append({"path": relative, "label": str(label), "label_name": name, "split": split,
                             "source_id": f"src_{seed:04d}", "sha256": sha, "width": str(SIDE),
                             "height": str(SIDE)})
                seed += 1
    info = {"format": "imagefolder", "source": "test", "num_classes": 7, "class_names": list(names),
            "image_size": SIDE, "num_inputs": len(rows), "num_rejected": 0, "carved_val": None, "dropped": {}}
    return Dataset(root, rows, [], info)


def failed(result) -> dict[str, str]:
    return {check.name: check.message for check in result.failures}


def test_valid_dataset_passes_and_writes_reports(dataset):
    result = validate_dataset(dataset.write(), QUIET)
    assert result.success, [c.message for c in result.failures]
    assert result.failures == [] and result.warnings == []
    assert result.report_json == dataset.root / "validation" / "report.json"
    report = json.loads(result.report_json.read_text())
    assert report["success"] is True
    names = {check["name"] for check in report["checks"]}
    for expected in ("label_known", "label_name_matches", "not_null.sha256", "path_unique", "splits_present",
                     "class_in_every_split", "no_train_eval_leakage", "rejected_share", "image_exists",
                     "image_size_matches", "image_width_in_bounds", "tiny_class", "class_imbalance"):
        assert expected in names
    assert all(check["success"] for check in report["checks"])
    assert report["summary"]["rows"] == 35
    assert report["summary"]["class_counts"]["train"]["fear"] == 3
    assert report["summary"]["split_rows"] == {"train": 21, "val": 7, "test": 7}
    page = result.report_html.read_text()
    assert "VALID" in page and "class_in_every_split" in page
    # Great Expectations' own Data Docs: an index, each suite and its validation result
    docs = dataset.root / "validation" / "data_docs"
    assert "fer_manifest" in (docs / "index.html").read_text(encoding="utf-8")
    assert (docs / "expectations" / "fer_manifest.html").is_file()
    assert list((docs / "validations" / "fer_manifest").rglob("*.html"))


def test_unknown_label_fails_naming_row_and_value(dataset):
    row = dataset.row("train", 2)
    row["label"] = "9"
    result = validate_dataset(dataset.write(), QUIET)
    assert not result.success
    message = failed(result)["label_known"]
    line = dataset.rows.index(row) + 2
    assert f"line {line}" in message and "'9'" in message and row["path"] in message
    example = next(c for c in result.failures if c.name == "label_known").examples[0]
    assert example == {"line": line, "path": row["path"], "label": "9"}


def test_label_name_not_matching_label_fails(dataset):
    row = dataset.row("val", 1)  # happy
    row["label_name"] = "sad"
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"label_name_matches"}
    message = failed(result)["label_name_matches"]
    assert row["path"] in message and "'sad'" in message and "'happy'" in message


def test_empty_cell_fails_naming_column_and_path(dataset):
    row = dataset.row("test", 3)
    row["source_id"] = ""
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"not_null.source_id"}
    assert row["path"] in failed(result)["not_null.source_id"]


def test_duplicate_path_fails(dataset):
    first, second = dataset.row("train", 0, 0), dataset.row("train", 0, 1)
    second["path"] = first["path"]
    second["sha256"] = first["sha256"]
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"path_unique"}
    message = failed(result)["path_unique"]
    assert "2 row(s)" in message and first["path"] in message


def test_class_missing_from_a_split_fails(dataset):
    dataset.rows = [r for r in dataset.rows if not (r["split"] == "val" and r["label_name"] == "fear")]
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"class_in_every_split"}
    assert "fear in val (0)" in failed(result)["class_in_every_split"]


def test_missing_split_fails(dataset):
    dataset.rows = [r for r in dataset.rows if r["split"] != "test"]
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"splits_present"}
    assert "test" in failed(result)["splits_present"]


def test_same_image_in_train_and_test_fails(dataset):
    train, test = dataset.row("train", 4), dataset.row("test", 4)
    test["sha256"] = train["sha256"]
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"no_train_eval_leakage"}
    message = failed(result)["no_train_eval_leakage"]
    assert train["sha256"] in message and train["path"] in message and test["path"] in message


def test_rejected_share_over_limit_fails_but_dropped_rows_do_not_count(dataset):
    dataset.info["num_inputs"] = len(dataset.rows) + 3
    dataset.rejected = [{"source": "raw/x.jpg", "row": "7", "kind": "dropped", "reason": "code 9 (uncertain)"},
                        {"source": "raw/y.jpg", "row": "8", "kind": "dropped", "reason": "code 10 (no-face)"}]
    assert validate_dataset(dataset.write(), QUIET).success  # 0 errors: dropped rows are on purpose
    dataset.rejected.append({"source": "raw/z.jpg", "row": "9", "kind": "error", "reason": "truncated image"})
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"rejected_share"}
    message = failed(result)["rejected_share"]
    assert "1 of 38 inputs" in message
    assert next(c for c in result.failures if c.name == "rejected_share").examples[0]["source"] == "raw/z.jpg"
    # The limit is a setting: 1/38 is fine under a 5 % limit.
    assert validate_dataset(dataset.root, ValidateConfig(tiny_class_warn=1, max_rejected_share=0.05)).success


def test_image_size_out_of_bounds_fails(dataset):
    row = dataset.row("train", 5)
    _write_png(dataset.root / row["path"], 999, size=(SIDE, 8))
    row["height"] = "8"
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"image_height_in_bounds"}
    message = failed(result)["image_height_in_bounds"]
    assert row["path"] in message and "'8'" in message and "16..4096" in message


def test_listed_image_missing_fails(dataset):
    row = dataset.row("val", 6)
    (dataset.root / row["path"]).unlink()
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"image_exists"}
    assert row["path"] in failed(result)["image_exists"]
    # Without image checks the manifest alone is valid.
    assert validate_dataset(dataset.root, QUIET, check_images=False).success


def test_unreadable_image_and_wrong_size_fail(dataset):
    broken, resized = dataset.row("train", 1, 0), dataset.row("train", 1, 1)
    (dataset.root / broken["path"]).write_bytes(b"not a png at all")
    _write_png(dataset.root / resized["path"], 1234, size=(SIDE + 4, SIDE))
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"image_readable", "image_size_matches"}
    assert broken["path"] in failed(result)["image_readable"]
    assert resized["path"] in failed(result)["image_size_matches"]
    example = next(c for c in result.failures if c.name == "image_size_matches").examples[0]
    assert example["image_width"] == SIDE + 4 and example["width"] == str(SIDE)


def test_path_outside_dataset_fails_and_is_never_opened(dataset, tmp_path):
    outside = tmp_path / "secret.png"
    _write_png(outside, 5)
    row = dataset.row("test", 0)
    row["path"] = "../secret.png"
    result = validate_dataset(dataset.write(), QUIET)
    assert set(failed(result)) == {"path_inside_dataset"}
    assert "../secret.png" in failed(result)["path_inside_dataset"]


def test_warnings_do_not_fail(dataset):
    for index in range(3, 40):  # neutral gets 40 train images vs 3 for the others: ratio 13.3 > 10
        relative = f"images/train/neutral/{index:03d}.png"
        sha = _write_png(dataset.root / relative, 10_000 + index)
        dataset.rows.append({"path": relative, "label": "0", "label_name": "neutral", "split": "train",
                             "source_id": f"extra_{index}", "sha256": sha, "width": str(SIDE), "height": str(SIDE)})
    dataset.info["num_inputs"] = len(dataset.rows)
    result = validate_dataset(dataset.write(), ValidateConfig())  # tiny_class_warn 20
    assert result.success and result.failures == []
    warned = {check.name: check.message for check in result.warnings}
    assert set(warned) == {"tiny_class", "class_imbalance"}
    assert "13.3" in warned["class_imbalance"] and "neutral 40" in warned["class_imbalance"]
    assert "happy in train (3)" in warned["tiny_class"]


def test_dataset_json_missing_or_wrong_fails(dataset):
    dataset.info["class_names"] = list(reversed(class_names(7)))
    result = validate_dataset(dataset.write(), QUIET)
    assert "dataset_json" in failed(result) and "canonical" in failed(result)["dataset_json"]
    (dataset.root / "dataset.json").unlink()
    result = validate_dataset(dataset.root, QUIET)
    assert "dataset_json" in failed(result) and "missing" in failed(result)["dataset_json"]


def test_manifest_missing_columns_fails(dataset):
    dataset.write()
    text = (dataset.root / "manifest.csv").read_text().splitlines()
    trimmed = [",".join(line.split(",")[:-1]) for line in text]  # drop height
    (dataset.root / "manifest.csv").write_text("\n".join(trimmed) + "\n")
    result = validate_dataset(dataset.root, QUIET)
    assert set(failed(result)) == {"manifest_columns"} and "height" in failed(result)["manifest_columns"]


def test_report_html_escapes_values_and_report_dir_is_honoured(dataset, tmp_path):
    dataset.row("train", 0)["label_name"] = "<script>alert(1)</script>"
    reports = tmp_path / "elsewhere"
    result = validate_dataset(dataset.write(), QUIET, report_dir=reports)
    assert result.report_html == reports / "report.html" and result.report_json.exists()
    page = result.report_html.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    report = json.loads(result.report_json.read_text())
    check = next(c for c in report["checks"] if c["name"] == "label_name_matches")
    assert check["success"] is False and check["severity"] == "critical"
    assert len(check["examples"]) == 1 and report["summary"]["critical_failures"] == 1
    assert not (dataset.root / "validation").exists()


def test_no_manifest_raises(tmp_path):
    with pytest.raises(ManifestNotFoundError, match="no manifest.csv"):
        validate_dataset(tmp_path, QUIET)


def test_cli_exit_codes(dataset, tmp_path):
    from fer_cli.main import cli

    runner = CliRunner()
    root = str(dataset.write())
    quiet = ["--set", "validate.tiny_class_warn=1"]
    ok = runner.invoke(cli, ["data", "validate", root, *quiet])
    assert ok.exit_code == 0, ok.output
    assert "VALID" in ok.output and str(dataset.root / "validation" / "report.html") in ok.output

    dataset.row("train", 3)["label"] = "12"
    dataset.write()
    bad = runner.invoke(cli, ["data", "validate", root, *quiet, "--report-dir", str(tmp_path / "r")])
    assert bad.exit_code == 1
    assert "CRITICAL label_known" in bad.output and "label=12" in bad.output
    assert str(tmp_path / "r" / "report.json") in bad.output

    empty = tmp_path / "empty"
    empty.mkdir()
    missing = runner.invoke(cli, ["data", "validate", str(empty)])
    assert missing.exit_code == 2 and "no manifest.csv" in missing.output
