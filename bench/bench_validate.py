"""Benchmark `validate_dataset` at AffectNet scale (300,000 manifest rows by default).

The dataset is generated on the spot: a handful of real PNGs, and one hard link per manifest row (unique
paths, as the manifest requires, at almost no disk cost), each row with its own well-formed sha256. It is
validated with image checks (every file opened, header parsed) and without (manifest only), each timed;
then the manifest is broken on half its rows (the worst case: every failing row is counted and indexed)
and timed again.

    .venv/bin/python bench/bench_validate.py [--rows 300000] [--workers 1 4] [--keep DIR]

Prints a table and writes bench/results/validate.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fer_core.config import ValidateConfig  # noqa: E402
from fer_core.io import write_json  # noqa: E402
from fer_core.labels import class_names  # noqa: E402
from fer_core.validation import validate_dataset  # noqa: E402

SPLIT_SHARES = {"train": 0.8, "val": 0.1, "test": 0.1}
# AffectNet-like skew (neutral/happy dominate), train max/min about 9, under the 10x warning.
CLASS_SHARES = np.array([0.25, 0.40, 0.09, 0.05, 0.03, 0.045, 0.135])


def make_dataset(root: Path, rows: int, distinct_files: int = 64, side: int = 100, seed: int = 0) -> float:
    """Write manifest.csv, rejected.csv, dataset.json and `rows` hard-linked PNGs; return seconds taken."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    names = class_names(7)
    sources = []
    for index in range(distinct_files):
        path = root / "source" / f"{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        sources.append(path)
    splits = rng.choice(list(SPLIT_SHARES), size=rows, p=list(SPLIT_SHARES.values()))
    labels = rng.choice(len(names), size=rows, p=CLASS_SHARES / CLASS_SHARES.sum())
    paths = [f"images/{split}/{names[label]}/{index:07d}.png" for index, (split, label) in
             enumerate(zip(splits, labels))]
    for folder in {str(Path(p).parent) for p in paths}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index, relative in enumerate(paths):
        os.link(sources[index % distinct_files], root / relative)
    frame = pd.DataFrame({
        "path": paths, "label": labels, "label_name": [names[label] for label in labels], "split": splits,
        "source_id": [f"affectnet_{index:07d}" for index in range(rows)],
        # Distinct per row (a hard-linked file's real hash would repeat and look like leakage).
        "sha256": [hashlib.sha256(f"row-{index}".encode()).hexdigest() for index in range(rows)],
        "width": side, "height": side,
    })
    frame.to_csv(root / "manifest.csv", index=False)
    pd.DataFrame(columns=["source", "row", "kind", "reason"]).to_csv(root / "rejected.csv", index=False)
    write_json(root / "dataset.json", {"format": "bench", "source": "generated", "num_classes": 7,
                                       "class_names": list(names), "image_size": side, "num_inputs": rows,
                                       "num_rejected": 0, "carved_val": None, "dropped": {}})
    return time.perf_counter() - started


def break_manifest(root: Path) -> None:
    """The worst case for reporting: half the labels unknown, half the rows leaking, a third too small."""
    frame = pd.read_csv(root / "manifest.csv", dtype=str)
    frame.loc[::2, "label"] = "9"
    frame.loc[1::2, "sha256"] = frame.loc[1, "sha256"]
    frame.loc[::3, "width"] = "8"
    frame.to_csv(root / "manifest.csv", index=False)


def run(root: Path, check_images: bool, workers: int, expect_valid: bool = True) -> dict:
    started = time.perf_counter()
    result = validate_dataset(root, ValidateConfig(), check_images=check_images, image_workers=workers)
    seconds = time.perf_counter() - started
    if result.success != expect_valid:
        raise SystemExit(f"benchmark dataset: expected valid={expect_valid}, got {result.success}: "
                         f"{[c.message[:200] for c in result.failures]}")
    return {"dataset": "valid" if expect_valid else "invalid",
            "mode": "manifest + images" if check_images else "manifest only",
            "image_workers": workers if check_images else 0, "seconds": round(seconds, 2),
            "image_check_seconds": result.summary["image_check_seconds"], "checks": result.summary["checks"],
            "failed_checks": len(result.failures), "rows_per_second": round(result.summary["rows"] / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4], help="image-check thread counts")
    parser.add_argument("--skip-invalid", action="store_true", help="skip the broken-manifest worst case")
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "validate.json")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="fer-bench-validate-"))
    try:
        if not (root / "manifest.csv").exists():
            generate_seconds = make_dataset(root, args.rows)
        else:
            generate_seconds = 0.0
        import great_expectations  # noqa: F401  - import once here so no row pays the 2 s import

        results = [run(root, False, 0)] + [run(root, True, workers) for workers in args.workers]
        if not args.skip_invalid:
            break_manifest(root)
            results += [run(root, False, 0, expect_valid=False), run(root, True, 1, expect_valid=False)]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"validate_dataset on {args.rows:,} manifest rows (generated in {generate_seconds:.1f} s); budget 30 s")
    print(f"{'dataset':<9}{'mode':<20}{'workers':>8}{'total s':>10}{'images s':>10}{'rows/s':>10}"
          f"{'checks':>8}{'failed':>8}")
    for row in results:
        print(f"{row['dataset']:<9}{row['mode']:<20}{row['image_workers']:>8}{row['seconds']:>10.2f}"
              f"{row['image_check_seconds']:>10.2f}{row['rows_per_second']:>10,}{row['checks']:>8}"
              f"{row['failed_checks']:>8}")
    write_json(args.out, {"rows": args.rows, "budget_seconds": 30, "results": results,
                          "within_budget": all(r["seconds"] < 30 for r in results),
                          "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                      "platform": platform.platform()}})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
