"""Readers for the public FER dataset formats, each in its own files, names and codes.

A reader turns a dataset folder into `Sample`s (what to decode, with split and canonical label) and
`Rejection`s (rows it cannot or must not use, each with its reason), so that every input row or file
ends up in exactly one of the two lists: nothing is lost without a trace. Readers only parse text and
list files; decoding images is ingest's job, in parallel. Codes map to the canonical order through
`fer_core.labels`, the one place that knows them.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fer_core import labels
from fer_core.data.sources import SourceError

from fer_core.data.prepared import SPLITS  # noqa: E402 - the contract's splits
# ImageFolder split folder names (case-insensitive).
SPLIT_ALIASES: dict[str, str] = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                                 "test": "test"}
ERROR = "error"      # an input we could not use: counts against the dataset's quality
DROPPED = "dropped"  # an input the format's own protocol excludes (AffectNet 8-10, FERPlus NF...)

RAFDB_LABEL_FILE = "EmoLabel/list_patition_label.txt"
AFFECTNET_FILES: dict[str, str] = {"training.csv": "train", "validation.csv": "test"}
AFFECTNET_COLUMNS: tuple[str, ...] = ("subDirectory_filePath", "face_x", "face_y", "face_width",
                                      "face_height", "facial_landmarks", "expression", "valence", "arousal")
AFFECTNET_IMAGE_DIR = "Manually_Annotated_Images"
FER2013_FILE = "fer2013.csv"
FER2013_COLUMNS: tuple[str, ...] = ("emotion", "pixels", "Usage")
FER2013_SIDE = 48
FERPLUS_FILE = "fer2013new.csv"


@dataclass(frozen=True)
class Sample:
    """One usable input row: where its pixels are, and what it is."""

    source: str                      # the file the row came from, relative to the dataset root
    row: str                         # line number in that file (or the file name for ImageFolder)
    source_id: str                   # stable id of the input, unique within the dataset
    split: str                       # train | val | test (val may still be carved later)
    label: int                       # index in the canonical order
    images: tuple[str, ...] = ()     # candidate image files relative to the root; the first existing wins
    image_ref: str = ""              # how errors name pixels given in a CSV (FER2013, FERPlus)
    pixels: str = ""                 # FER2013 pixel string (48x48 gray), instead of a file
    box: tuple[int, int, int, int] | None = None  # face crop x, y, width, height (AffectNet)
    landmarks: tuple[tuple[float, float], ...] | None = None  # five points for data.faces=detect (AffectNet)


@dataclass(frozen=True)
class Rejection:
    source: str
    row: str
    kind: str                        # ERROR or DROPPED
    reason: str


@dataclass
class ReadResult:
    samples: list[Sample] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)      # reason -> count, for dataset.json
    native_splits: frozenset[str] = frozenset()            # splits the format itself defines

    def reject(self, source: str, row: object, reason: str) -> None:
        self.rejections.append(Rejection(source, str(row), ERROR, reason))

    def drop(self, source: str, row: object, key: str, reason: str) -> None:
        self.dropped[key] += 1
        self.rejections.append(Rejection(source, str(row), DROPPED, reason))

    @property
    def num_inputs(self) -> int:
        return len(self.samples) + len(self.rejections)


def leaves_root(relative: str) -> bool:
    """True for a listed path that could point outside the dataset root: absolute, or with a `..`."""
    parts = relative.replace("\\", "/").split("/")
    return relative.startswith(("/", "\\")) or Path(relative).is_absolute() or ".." in parts


def _require_file(root: Path, relative: str, what: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise SourceError(f"{what}: label file {relative} not found under {root}")
    return path


def _canonical(name: str, num_classes: int) -> int | None:
    """Canonical index of a class name, None when the class is outside a 7-class problem (contempt)."""
    if name not in labels.class_names(num_classes):
        return None
    return labels.label_index(name, num_classes)


def _parse_int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line, {column: value}) per data row, or (line, reason) for a malformed row.

    A missing header column makes the whole file unusable: that is a SourceError, not a row error.
    """
    name = path.name
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise SourceError(f"{name} line 1: not a readable CSV header: {exc}") from None
        if header is None:
            raise SourceError(f"{name} is empty (expected a header with {', '.join(required)})")
        header = [column.strip() for column in header]
        missing = [column for column in required if column not in header]
        if missing:
            raise SourceError(f"{name}: header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, f"malformed CSV: {exc}"
                continue
            if not values or all(not value.strip() for value in values):
                continue  # blank line: not an input
            if len(values) != len(header):
                yield reader.line_num, f"expected {len(header)} columns, got {len(values)}"
                continue
            yield reader.line_num, dict(zip(header, values))


# --- RAF-DB basic -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RafdbEntry:
    """One line of a RAF-DB partition/label list (`<name> <code 1..7>`)."""

    name: str      # a plain file name: train_00001.jpg
    split: str     # train | test, from the name's prefix
    code: int      # RAF-DB code 1..7 (fer_core.labels.RAFDB_CODES)


def parse_rafdb_line(line: str) -> RafdbEntry | str | None:
    """The one parser of RAF-DB list lines (ingest and `fer data synth` both use it): the entry, the
    reason the line is bad (the caller names the file and row), or None for a blank line."""
    parts = line.split()
    if not parts:
        return None
    if len(parts) != 2:
        return f"expected '<name> <code>', got {line.strip()!r}"
    name, code_text = parts
    code = _parse_int(code_text)
    if code is None:
        return f"label {code_text!r} of {name} is not a number"
    if code not in labels.RAFDB_CODES:
        return (f"label {code} of {name} out of range (RAF-DB codes are 1..7: "
                f"{', '.join(f'{k}={v}' for k, v in labels.RAFDB_CODES.items())})")
    if leaves_root(name) or "/" in name or "\\" in name:
        return (f"image name {name!r} is a path; RAF-DB lists plain file names inside Image/ "
                "(a path could leave the dataset)")
    split = "train" if name.startswith("train_") else "test" if name.startswith("test_") else None
    if split is None:
        return f"image name {name!r} starts with neither train_ nor test_"
    return RafdbEntry(name, split, code)


def read_rafdb(root: Path, num_classes: int) -> ReadResult:
    """`EmoLabel/list_patition_label.txt` lines `<name> <code 1..7>`; aligned image, else original."""
    label_file = _require_file(root, RAFDB_LABEL_FILE, "RAF-DB")
    result = ReadResult(native_splits=frozenset({"train", "test"}))
    source = RAFDB_LABEL_FILE
    with open(label_file, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            entry = parse_rafdb_line(line)
            if entry is None:
                continue
            if isinstance(entry, str):
                result.reject(source, line_no, entry)
                continue
            name, split, code = entry.name, entry.split, entry.code
            stem = Path(name).stem
            aligned = f"Image/aligned/{stem}_aligned.jpg"
            label = _canonical(labels.RAFDB_CODES[code], num_classes)
            result.samples.append(Sample(
                source=source, row=str(line_no), source_id=stem, split=split, label=label,
                images=(aligned, f"Image/original/{name}"),
            ))
    return result


# --- AffectNet ----------------------------------------------------------------------------------

def _affectnet_box(values: dict[str, str]) -> tuple[int, int, int, int] | str:
    numbers = []
    for column in ("face_x", "face_y", "face_width", "face_height"):
        text = values[column].strip()
        try:
            number = float(text)
        except ValueError:
            return f"{column} {text!r} is not a number"
        if not number.is_integer():
            return f"{column} {text!r} is not a whole pixel count"
        numbers.append(int(number))
    x, y, width, height = numbers
    if x < 0 or y < 0 or width <= 0 or height <= 0:
        return f"face box {numbers} has a negative origin or an empty size"
    return x, y, width, height


# AffectNet's 68 points (the iBUG layout) -> the face step's five: the eye centres, the nose tip, the
# mouth corners (fer_core.data.faces.LANDMARK_NAMES, image-left first).
IBUG_EYE_LEFT, IBUG_EYE_RIGHT = range(36, 42), range(42, 48)
IBUG_NOSE_TIP, IBUG_MOUTH_LEFT, IBUG_MOUTH_RIGHT = 30, 48, 54


def affectnet_five_points(text: str) -> tuple[tuple[float, float], ...] | None:
    """facial_landmarks ("x1;y1;...;x68;y68") -> five points, or None when absent or not 68 finite points
    (the face is then detected instead)."""
    try:
        values = [float(value) for value in text.replace(",", ";").split(";") if value.strip()]
    except ValueError:
        return None
    if len(values) != 136 or not all(value == value and abs(value) < 1e7 for value in values):
        return None
    points = [(values[2 * i], values[2 * i + 1]) for i in range(68)]

    def centre(indices: range) -> tuple[float, float]:
        return (sum(points[i][0] for i in indices) / len(indices), sum(points[i][1] for i in indices) / len(indices))

    # +0.5: AffectNet's points are pixel indices; the face step works in continuous coordinates
    five = (centre(IBUG_EYE_LEFT), centre(IBUG_EYE_RIGHT), points[IBUG_NOSE_TIP], points[IBUG_MOUTH_LEFT],
            points[IBUG_MOUTH_RIGHT])
    return tuple((x + 0.5, y + 0.5) for x, y in five)


def read_affectnet(root: Path, num_classes: int) -> ReadResult:
    """`training.csv` (train, val carved) and `validation.csv` (test); codes 0..10; face box cropped, or
    with data.faces=detect the face aligned from its own landmarks (detected when none are given)."""
    for name in AFFECTNET_FILES:
        _require_file(root, name, "AffectNet")
    image_root = root / AFFECTNET_IMAGE_DIR if (root / AFFECTNET_IMAGE_DIR).is_dir() else root
    result = ReadResult(native_splits=frozenset(AFFECTNET_FILES.values()))
    for file_name, split in AFFECTNET_FILES.items():
        for line_no, values in _csv_rows(root / file_name, AFFECTNET_COLUMNS):
            if isinstance(values, str):
                result.reject(file_name, line_no, values)
                continue
            relative = values["subDirectory_filePath"].strip()
            code_text = values["expression"].strip()
            code = _parse_int(code_text)
            if code is None:
                result.reject(file_name, line_no, f"expression {code_text!r} of {relative} is not a number")
                continue
            if code in labels.AFFECTNET_DROPPED_CODES:
                what = labels.AFFECTNET_DROPPED_CODES[code]
                result.drop(file_name, line_no, f"{code} {what}", f"expression {code} ({what}) is not an emotion")
                continue
            if code not in labels.AFFECTNET_CODES:
                result.reject(file_name, line_no, f"expression {code} of {relative} out of range (AffectNet codes are 0..10)")
                continue
            label = _canonical(labels.AFFECTNET_CODES[code], num_classes)
            if label is None:
                result.drop(file_name, line_no, f"{code} contempt", f"expression {code} (contempt) outside the {num_classes}-class problem")
                continue
            if not relative:
                result.reject(file_name, line_no, "subDirectory_filePath is empty")
                continue
            if leaves_root(relative):
                result.reject(file_name, line_no, f"subDirectory_filePath {relative!r} points outside the dataset")
                continue
            box = _affectnet_box(values)
            if isinstance(box, str):
                result.reject(file_name, line_no, f"{relative}: {box}")
                continue
            result.samples.append(Sample(
                source=file_name, row=str(line_no), source_id=relative, split=split, label=label,
                images=((image_root.relative_to(root) / relative).as_posix(),),
                box=box, landmarks=affectnet_five_points(values["facial_landmarks"] or ""),
            ))
    return result


# --- FER2013 ------------------------------------------------------------------------------------

def _fer2013_rows(root: Path) -> list[tuple[int, dict[str, str] | str]]:
    path = _require_file(root, FER2013_FILE, "FER2013")
    return list(_csv_rows(path, FER2013_COLUMNS))


def read_fer2013(root: Path, num_classes: int) -> ReadResult:
    """`fer2013.csv`: emotion 0..6, pixels (48x48 gray), Usage Training/PublicTest/PrivateTest."""
    result = ReadResult(native_splits=frozenset(SPLITS))
    for index, (line_no, values) in enumerate(_fer2013_rows(root)):
        if isinstance(values, str):
            result.reject(FER2013_FILE, line_no, values)
            continue
        code_text = values["emotion"].strip()
        code = _parse_int(code_text)
        if code is None:
            result.reject(FER2013_FILE, line_no, f"emotion {code_text!r} is not a number")
            continue
        if code not in labels.FER2013_CODES:
            result.reject(FER2013_FILE, line_no, f"emotion {code} out of range (FER2013 codes are 0..6)")
            continue
        usage = values["Usage"].strip()
        if usage not in labels.FER2013_USAGE:
            result.reject(FER2013_FILE, line_no, f"Usage {usage!r} is not one of {', '.join(labels.FER2013_USAGE)}")
            continue
        result.samples.append(Sample(
            source=FER2013_FILE, row=str(line_no), source_id=f"fer{index:07d}",
            split=labels.FER2013_USAGE[usage], label=_canonical(labels.FER2013_CODES[code], num_classes),
            image_ref=f"pixels ({FER2013_FILE} line {line_no})", pixels=values["pixels"],
        ))
    return result


# --- FERPlus ------------------------------------------------------------------------------------

def ferplus_majority(votes: list[int]) -> str:
    """FERPlus's own "majority" rule (generate_training_data.py): the vote column name, or a drop reason.

    Single votes are removed as outliers; the top emotion must then hold more than half of the
    remaining votes (so a tie at the top never wins), and must not be `unknown` or `NF`.
    """
    kept = [count if count > 1 else 0 for count in votes]
    total = sum(kept)
    top = max(kept)
    if total == 0 or top <= 0.5 * total:
        return "no majority"
    return labels.FERPLUS_VOTE_COLUMNS[kept.index(top)]


def read_ferplus(root: Path, num_classes: int) -> ReadResult:
    """`fer2013new.csv` votes, row-aligned with `fer2013.csv` pixels; majority rule; its own Usage."""
    path = _require_file(root, FERPLUS_FILE, "FERPlus")
    pixel_rows = _fer2013_rows(root)
    required = ("Usage", "Image name", *labels.FERPLUS_VOTE_COLUMNS)
    result = ReadResult(native_splits=frozenset(SPLITS))
    for index, (line_no, values) in enumerate(_csv_rows(path, required)):
        if isinstance(values, str):
            result.reject(FERPLUS_FILE, line_no, values)
            continue
        if index >= len(pixel_rows):
            result.reject(FERPLUS_FILE, line_no, f"no matching row {index + 1} in {FER2013_FILE} (it has {len(pixel_rows)})")
            continue
        pixel_line, pixel_values = pixel_rows[index]
        if isinstance(pixel_values, str):
            result.reject(FERPLUS_FILE, line_no, f"its pixels row ({FER2013_FILE} line {pixel_line}) is malformed: {pixel_values}")
            continue
        votes = [_parse_int(values[column]) if values[column].strip() else 0 for column in labels.FERPLUS_VOTE_COLUMNS]
        bad = [column for column, vote in zip(labels.FERPLUS_VOTE_COLUMNS, votes) if vote is None or vote < 0]
        if bad:
            result.reject(FERPLUS_FILE, line_no, f"vote column(s) {', '.join(bad)} are not whole non-negative numbers")
            continue
        usage = values["Usage"].strip()
        if usage not in labels.FER2013_USAGE:
            result.reject(FERPLUS_FILE, line_no, f"Usage {usage!r} is not one of {', '.join(labels.FER2013_USAGE)}")
            continue
        winner = ferplus_majority(votes)
        if winner not in labels.FERPLUS_CODES:
            result.drop(FERPLUS_FILE, line_no, winner, f"majority vote is {winner!r}: not a usable emotion")
            continue
        label = _canonical(labels.FERPLUS_CODES[winner], num_classes)
        if label is None:
            result.drop(FERPLUS_FILE, line_no, "contempt", f"majority vote contempt is outside the {num_classes}-class problem")
            continue
        image_name = values["Image name"].strip()
        result.samples.append(Sample(
            source=FERPLUS_FILE, row=str(line_no), source_id=Path(image_name).stem if image_name else f"fer{index:07d}",
            split=labels.FER2013_USAGE[usage], label=label,
            image_ref=f"pixels ({FER2013_FILE} line {pixel_line})", pixels=pixel_values["pixels"],
        ))
    return result


# --- ImageFolder --------------------------------------------------------------------------------

def _visible_files(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted; dot-files (.DS_Store, ._x) are filesystem litter, not inputs."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        found.extend(Path(dirpath) / name for name in sorted(filenames) if not name.startswith("."))
    return sorted(found)


def read_imagefolder(root: Path, num_classes: int) -> ReadResult:
    """`<split>/<class>/*` with split train|val|test (valid, validation) and class via labels.FOLDER_ALIASES."""
    entries = sorted(entry for entry in root.iterdir() if not entry.name.startswith("."))
    split_dirs = {entry: SPLIT_ALIASES[entry.name.lower()] for entry in entries
                  if entry.is_dir() and entry.name.lower() in SPLIT_ALIASES}
    if not split_dirs:
        raise SourceError(f"ImageFolder: no split folder (train, val, test) under {root}")
    result = ReadResult(native_splits=frozenset(split_dirs.values()))

    def reject_all(files: list[Path], reason: str) -> None:
        for file in files:
            relative = file.relative_to(root)
            result.reject(str(relative.parent), relative.name, reason)

    for entry in entries:
        if entry not in split_dirs:
            reject_all(_visible_files(entry) if entry.is_dir() else [entry],
                       f"not inside a <split>/<class>/ folder (splits: {', '.join(SPLIT_ALIASES)})")
            continue
        split = split_dirs[entry]
        for class_dir in sorted(child for child in entry.iterdir() if not child.name.startswith(".")):
            if not class_dir.is_dir():
                reject_all([class_dir], "an image directly in a split folder has no class folder")
                continue
            files = _visible_files(class_dir)
            canonical = labels.FOLDER_ALIASES.get(class_dir.name.lower())
            if canonical is None:
                reject_all(files, f"unknown class folder {class_dir.name!r} (known: {', '.join(sorted(labels.FOLDER_ALIASES))})")
                continue
            label = _canonical(canonical, num_classes)
            for file in files:
                relative = file.relative_to(root)
                if label is None:
                    result.drop(str(relative.parent), relative.name, canonical,
                                f"class {canonical} is outside the {num_classes}-class problem")
                    continue
                result.samples.append(Sample(
                    source=str(relative.parent), row=relative.name, source_id=relative.with_suffix("").as_posix(),
                    split=split, label=label, images=(relative.as_posix(),),
                ))
    return result


READERS: dict[str, Callable[[Path, int], ReadResult]] = {
    "rafdb": read_rafdb,
    "affectnet": read_affectnet,
    "fer2013": read_fer2013,
    "ferplus": read_ferplus,
    "imagefolder": read_imagefolder,
}


def read_dataset(fmt: str, root: Path, num_classes: int) -> ReadResult:
    """Dispatch to the reader of `fmt`; an unknown format is a SourceError listing the known ones."""
    reader = READERS.get(fmt.lower())
    if reader is None:
        raise SourceError(f"unknown dataset format {fmt!r}; known: {', '.join(READERS)}")
    labels.class_names(num_classes)  # 7 or 8, else a clear ValueError before any work
    return reader(root, num_classes)
