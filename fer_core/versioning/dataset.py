"""What identifies a prepared dataset's content: the sha256 of its manifest.csv (which lists the sha256
of every image), the one digest MLflow runs, DVC versions and reports quote. No DVC import here."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

MANIFEST = "manifest.csv"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_version(data_dir: str | Path) -> dict[str, Any]:
    """{path, manifest_sha256, rows, splits: {split: rows}} of a prepared dataset folder."""
    data_dir = Path(data_dir).resolve()
    manifest = data_dir / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} missing: {data_dir} is not a prepared dataset "
                                "(run `fer data ingest` first)")
    with open(manifest, newline="", encoding="utf-8") as handle:
        splits = Counter(row.get("split", "") for row in csv.DictReader(handle))
    return {"path": str(data_dir), "manifest_sha256": file_sha256(manifest), "rows": sum(splits.values()),
            "splits": dict(sorted(splits.items()))}
