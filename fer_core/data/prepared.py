"""The prepared-dataset contract: what `fer data ingest` writes and every later step reads.

A prepared dataset is one folder:

    manifest.csv        one row per stored image: MANIFEST_COLUMNS (path relative to the folder)
    images/<class>/     the stored images (one size, one format)
    rejected.csv        every input row or file that did not become an image, and why (REJECTED_COLUMNS)
    dataset.json        class names, counts, the format and settings it was made with
    data_version.json   where it came from (source, DVC repo/rev/md5) and the manifest's sha256
    synth_truth.csv     only for `fer data synth` sets: each image's clean label, flip, intensity, partner
    faces.csv           only with data.faces=detect: the face each stored crop was aligned from

This module owns those names, the columns, the typed row and the one reader of manifest.csv
(`read_manifest`), the class names, the split counts, the data version and the truth sidecar. The
validation suite reads the same files as text on purpose (a bad value must reach its report as
written); it takes the names and columns from here.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_core.labels import class_names as canonical_class_names

MANIFEST = "manifest.csv"
DATASET_JSON = "dataset.json"
REJECTED = "rejected.csv"
IMAGES_DIR = "images"
DATA_VERSION = "data_version.json"
TRUTH = "synth_truth.csv"
FACES = "faces.csv"

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "label_name", "split", "source_id", "sha256", "width", "height")
REJECTED_COLUMNS: tuple[str, ...] = ("source", "row", "kind", "reason")
TRUTH_COLUMNS: tuple[str, ...] = ("name", "split", "label", "clean_label", "flipped", "intensity", "label_name",
                                  "clean_label_name", "cue_partner")
# found: faces the detector found in the photo ("given": the dataset's own landmarks); box: x y width height
# of the aligned face in the photo's pixels; landmarks: five "x y" pairs (fer_core.data.faces.LANDMARK_NAMES)
FACES_COLUMNS: tuple[str, ...] = ("path", "source_id", "found", "score", "box", "landmarks")
SPLITS: tuple[str, ...] = ("train", "val", "test")


class ManifestError(ValueError):
    """A prepared dataset that breaks the contract; the message names the file, line and field."""


@dataclass(frozen=True)
class ManifestRow:
    line: int          # line number in manifest.csv (the header is line 1), for error messages
    path: str          # relative to the dataset folder
    label: int
    label_name: str
    split: str
    source_id: str
    width: int
    height: int


def manifest_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / MANIFEST


def read_manifest(data_dir: str | Path, num_classes: int | None = None) -> list[ManifestRow]:
    """All rows of DIR/manifest.csv, checked against the contract (columns, label range, split)."""
    manifest = manifest_path(data_dir)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: is {data_dir} a prepared dataset (fer data ingest)?")
    rows: list[ManifestRow] = []
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{manifest}: missing column(s) {', '.join(missing)}; "
                                f"expected {','.join(MANIFEST_COLUMNS)}")
        for line, raw in enumerate(reader, start=2):
            rows.append(_parse_row(raw, line, manifest, num_classes))
    return rows


def _parse_row(raw: dict[str, str], line: int, manifest: Path, num_classes: int | None) -> ManifestRow:
    def fail(field: str, why: str) -> ManifestError:
        return ManifestError(f"{manifest} line {line}, field {field}: {why} (value {raw.get(field)!r})")

    try:
        label = int(raw["label"])
    except (TypeError, ValueError):
        raise fail("label", "not an integer") from None
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise fail("label", f"outside 0..{(num_classes or 1) - 1}")
    if raw["split"] not in SPLITS:
        raise fail("split", f"must be one of {', '.join(SPLITS)}")
    if not raw["path"]:
        raise fail("path", "empty")
    try:
        width, height = int(raw["width"] or 0), int(raw["height"] or 0)
    except ValueError:
        raise fail("width", "width/height must be integers") from None
    return ManifestRow(line=line, path=raw["path"], label=label, label_name=raw["label_name"],
                       split=raw["split"], source_id=raw["source_id"], width=width, height=height)


def read_info(data_dir: str | Path) -> dict[str, Any]:
    """dataset.json as a dict ({} when absent); a ManifestError naming the file when it is not JSON."""
    path = Path(data_dir) / DATASET_JSON
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ManifestError(f"{path}: must hold a JSON object")
    return info


def read_class_names(data_dir: str | Path, default_num_classes: int = 7) -> list[str]:
    """class_names from DIR/dataset.json, else the canonical names for default_num_classes."""
    info = read_info(data_dir)
    names = info.get("class_names")
    if names is None:
        return list(canonical_class_names(int(info.get("num_classes", default_num_classes))))
    if not isinstance(names, list) or not names or len(set(names)) != len(names):
        raise ManifestError(f"{Path(data_dir) / DATASET_JSON}: class_names must be a non-empty list of distinct names")
    return [str(name) for name in names]


def split_counts(data_dir: str | Path, num_classes: int) -> dict[str, list[int]]:
    """Per-label counts of every split present ({"train": [...], "val": [...], ...})."""
    out: dict[str, list[int]] = {}
    for row in read_manifest(data_dir, num_classes):
        out.setdefault(row.split, [0] * num_classes)[row.label] += 1
    return out


def train_counts(data_dir: str | Path, num_classes: int) -> list[int]:
    """Per-label counts of the train split."""
    return split_counts(data_dir, num_classes).get("train", [0] * num_classes)


# ------------------------------------------------------------------------------------ data version

def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_version(data_dir: str | Path) -> dict[str, Any]:
    """{manifest_sha256, rows, splits: {split: rows}}: the manifest's sha256 (it lists every image's
    sha256) is the one digest MLflow runs, DVC versions and reports quote. Nothing of where the folder
    is: the same data gives the same version anywhere."""
    data_dir = Path(data_dir).resolve()
    manifest = manifest_path(data_dir)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} missing: {data_dir} is not a prepared dataset "
                                "(run `fer data ingest` first)")
    splits = Counter(row.split for row in read_manifest(data_dir))
    return {"manifest_sha256": file_sha256(manifest), "rows": sum(splits.values()),
            "splits": dict(sorted(splits.items()))}


def read_data_version(data_dir: str | Path) -> dict[str, Any]:
    """DIR/data_version.json (what ingest recorded about the source), {} when the folder has none."""
    path = Path(data_dir) / DATA_VERSION
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON: {exc}") from None


def data_name(data_dir: str | Path, version: dict[str, Any] | None = None) -> str:
    """A short name for the data: the DVC path's or the source's last part, else the folder's name."""
    version = read_data_version(data_dir) if version is None else version
    return Path(str(version.get("dvc_path") or version.get("source") or data_dir)).name


# -------------------------------------------------------------------------------- the truth sidecar

@dataclass(frozen=True)
class TruthRow:
    """What a synthetic set knows about one image (synth_truth.csv)."""

    flipped: bool
    intensity: float | None = None         # None when the file predates intensities
    clean_label_name: str | None = None


def read_truth(path: str | Path) -> dict[str, TruthRow]:
    """synth_truth.csv -> {name: TruthRow}, also keyed by the name's stem (ingest may keep either);
    a bad value is an error naming the file and line."""
    path = Path(path)
    out: dict[str, TruthRow] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = set(reader.fieldnames or ())
        missing = {"name", "flipped"} - fields
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        graded = {"intensity", "clean_label_name"} <= fields
        for row in reader:
            value = row["flipped"].strip().lower()
            if value not in ("0", "1", "true", "false"):
                raise ManifestError(f"{path} line {reader.line_num}: flipped must be 0/1, got {row['flipped']!r}")
            intensity = None
            if graded:
                try:
                    intensity = float(row["intensity"])
                except ValueError:
                    raise ManifestError(f"{path} line {reader.line_num}: intensity {row['intensity']!r} "
                                        "is not a number") from None
            out[row["name"]] = TruthRow(value in ("1", "true"), intensity,
                                        row["clean_label_name"] if graded else None)
    stems = {Path(name).stem: truth for name, truth in out.items()}
    if len(stems) == len(out):
        for stem, truth in stems.items():
            out.setdefault(stem, truth)
    return out
