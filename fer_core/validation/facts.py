"""Read a prepared dataset (the contract: fer_core.data.prepared) into the facts the validation suite checks.

Everything here is plain pandas/PIL: the manifest as text (so a bad value reaches the report exactly as
written, not as a NaN after a failed cast), dataset.json, the rejected.csv error count and, per row, what
the image file on disk says about itself (header only: PIL reads the size without decoding pixels).
"""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer_core.data.prepared import DATASET_JSON, MANIFEST, REJECTED, REJECTED_COLUMNS

LINE = "_line"  # manifest.csv line number of a row (the header is line 1); how reports point at a row

# Values of the per-row `_image_problem` column.
IMAGE_OK = "ok"
IMAGE_MISSING = "missing"
IMAGE_UNREADABLE = "unreadable"
IMAGE_NOT_CHECKED = "not checked"  # the path is unsafe or empty: never opened (reported by other checks)


class ManifestNotFoundError(FileNotFoundError):
    """DATA_DIR has no manifest.csv: not a prepared dataset at all (the CLI exits 2)."""


class ManifestParseError(ValueError):
    """manifest.csv exists but is not a CSV table pandas can read."""


@dataclass(frozen=True)
class DatasetInfo:
    """What dataset.json says, or why it could not be used (`problem`)."""

    num_classes: int | None
    class_names: tuple[str, ...] | None
    num_inputs: int | None
    problem: str | None


@dataclass(frozen=True)
class RejectedCounts:
    """Rows of rejected.csv: `errors` count toward the rejected share, `dropped` (on purpose) do not."""

    errors: int
    dropped: int
    present: bool
    examples: tuple[dict, ...]


def read_manifest(data_dir: Path) -> pd.DataFrame:
    """manifest.csv as strings (empty cell -> NaN), plus the `_line` column; raises on a missing file."""
    path = data_dir / MANIFEST
    if not path.is_file():
        raise ManifestNotFoundError(
            f"no {MANIFEST} in {data_dir}: not a prepared dataset (make one with `fer data ingest`)"
        )
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestParseError(f"{path} is not a readable CSV table: {exc}") from None
    frame.insert(0, LINE, np.arange(len(frame), dtype=np.int64) + 2)
    return frame


def read_dataset_info(data_dir: Path) -> DatasetInfo:
    """dataset.json's class count, class names and input count; a problem string instead of raising."""
    path = data_dir / DATASET_JSON
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except FileNotFoundError:
        return DatasetInfo(None, None, None, f"{path} is missing (ingest writes it)")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return DatasetInfo(None, None, None, f"{path} is not valid JSON: {exc}")
    if not isinstance(raw, dict):
        return DatasetInfo(None, None, None, f"{path} must hold a JSON object")
    num_classes = raw.get("num_classes")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        return DatasetInfo(None, None, None, f"{path}: num_classes must be an integer, got {num_classes!r}")
    names = raw.get("class_names")
    class_names = tuple(names) if isinstance(names, list) else None
    num_inputs = raw.get("num_inputs")
    if not isinstance(num_inputs, int) or isinstance(num_inputs, bool) or num_inputs < 0:
        num_inputs = None
    return DatasetInfo(num_classes, class_names, num_inputs, None)


def read_rejected(data_dir: Path) -> RejectedCounts:
    """Count rejected.csv rows; a row without kind (older layout) or with any kind but `dropped` is an error."""
    path = data_dir / REJECTED
    if not path.is_file():
        return RejectedCounts(0, 0, False, ())
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return RejectedCounts(0, 0, True, ())
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestParseError(f"{path} is not a readable CSV table: {exc}") from None
    if "kind" in frame.columns:
        is_error = frame["kind"].str.strip().str.lower() != "dropped"
    else:
        is_error = pd.Series(True, index=frame.index)
    errors = frame[is_error]
    columns = [c for c in REJECTED_COLUMNS if c in frame.columns]
    examples = tuple(errors[columns].head(5).to_dict(orient="records"))
    return RejectedCounts(int(is_error.sum()), int((~is_error).sum()), True, examples)


def unsafe_path_mask(paths: pd.Series) -> pd.Series:
    """True where a manifest path is absolute or climbs out of DATA_DIR (we must never open those)."""
    text = paths.fillna("")
    return text.str.contains(r"^(?:/|\\|[A-Za-z]:)|(?:^|[/\\])\.\.(?:[/\\]|$)", regex=True) | (text == "")


def _probe_one(root: str, relative: str) -> tuple[str, float, float, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(os.path.join(root, relative)) as image:
                width, height = image.size
        return IMAGE_OK, float(width), float(height), ""
    except FileNotFoundError:
        return IMAGE_MISSING, np.nan, np.nan, "file not found"
    except Exception as exc:  # any reason PIL cannot parse the header makes the file unusable
        return IMAGE_UNREADABLE, np.nan, np.nan, f"{type(exc).__name__}: {exc}"[:200]


def _probe_chunk(root: str, relatives: list[str]) -> list[tuple[str, float, float, str]]:
    return [_probe_one(root, rel) if rel is not None else (IMAGE_NOT_CHECKED, np.nan, np.nan, "")
            for rel in relatives]


def probe_images(data_dir: Path, paths: pd.Series, workers: int = 4, chunk: int = 4096) -> pd.DataFrame:
    """Per row: `_image_problem`, `_image_width`, `_image_height`, `_image_error` from the file's header.

    Unsafe paths are not opened. Threads overlap file-system latency (network disks, cold caches); on a
    warm local disk the work is GIL-bound and a single thread is about as fast.
    """
    root = str(data_dir)
    unsafe = unsafe_path_mask(paths).to_numpy()
    relatives = [None if bad else rel for rel, bad in zip(paths.tolist(), unsafe)]
    chunks = [relatives[i:i + chunk] for i in range(0, len(relatives), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        results = [row for part in chunks for row in _probe_chunk(root, part)]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fer-validate") as pool:
            results = [row for part in pool.map(lambda part: _probe_chunk(root, part), chunks) for row in part]
    problem, width, height, error = zip(*results) if results else ((), (), (), ())
    return pd.DataFrame({
        "_image_problem": pd.Series(problem, index=paths.index, dtype=object),
        "_image_width": pd.Series(width, index=paths.index, dtype=float),
        "_image_height": pd.Series(height, index=paths.index, dtype=float),
        "_image_error": pd.Series(error, index=paths.index, dtype=object),
    })
