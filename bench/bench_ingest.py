"""Benchmark: ingest throughput against the floor of any reader (read + decode + hash, one process).

Writes ~2000 100x100 RAF-DB-layout JPEGs (tests' fixture writer), then times, over the same files:
  (a) a plain loop: read bytes, PIL decode, sha256; single process: what any reader must pay;
  (b) fer_core.data.ingest.ingest() with data.workers=2 (decode, resize, PNG encode, hash, write,
      manifest, carve, atomic rename).
Prints a table and writes bench/results/ingest.json. Goal: ingest rate >= 0.7 x plain-loop rate.

    .venv/bin/python bench/bench_ingest.py [--per-class-train 229] [--per-class-test 57] [--repeat 3]
                                           [--work-dir /dev/shm]

--work-dir picks the disk both the source files and the prepared dataset live on: ingest must create
one file per image, and on a slow virtual disk that creation, not decoding, bounds the rate.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from fer_core.config import DataConfig  # noqa: E402
from fer_core.data.ingest import ingest  # noqa: E402
from fer_core.io import write_json  # noqa: E402
from tests.data.fixtures import rafdb_rows, write_rafdb  # noqa: E402

GOAL_RATIO = 0.7


def plain_loop(files: list[Path]) -> float:
    """Seconds to read, decode and hash every file in one process: the reference floor."""
    start = time.perf_counter()
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        hashlib.sha256(data).hexdigest()
    return time.perf_counter() - start


def timed_ingest(root: Path, out: Path, workers: int) -> tuple[float, dict]:
    start = time.perf_counter()
    summary = ingest("rafdb", root, out, DataConfig(image_size=100, workers=workers), progress=False)
    return time.perf_counter() - start, summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class-train", type=int, default=229)
    parser.add_argument("--per-class-test", type=int, default=57)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings for each side")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the data lives (default: system temp)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=args.work_dir) as tmp:
        root = write_rafdb(Path(tmp) / "rafdb", rafdb_rows(args.per_class_train, args.per_class_test), size=100)
        files = sorted((root / "Image" / "aligned").iterdir())
        plain_loop(files)  # warm the page cache so both sides read from memory
        plain_s = min(plain_loop(files) for _ in range(args.repeat))
        # a fresh output folder each time: replacing an old one would time its deletion too
        ingest_runs = [timed_ingest(root, Path(tmp) / f"prepared-{run}", args.workers) for run in range(args.repeat)]
        ingest_s, summary = min(ingest_runs, key=lambda run: run[0])

    count = len(files)
    assert summary["num_images"] == count, summary  # the bench must measure a complete ingest
    plain_rate, ingest_rate = count / plain_s, count / ingest_s
    ratio = ingest_rate / plain_rate
    result = {
        "images": count, "image_size": "100x100 JPEG -> 100x100 PNG", "repeat": args.repeat,
        "plain_loop": {"seconds": round(plain_s, 4), "images_per_s": round(plain_rate, 1), "processes": 1},
        "ingest": {"seconds": round(ingest_s, 4), "images_per_s": round(ingest_rate, 1), "workers": args.workers},
        "ratio": round(ratio, 3), "goal_ratio": GOAL_RATIO, "meets_goal": ratio >= GOAL_RATIO,
        "work_dir": str(args.work_dir or tempfile.gettempdir()),
        "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(), "python": platform.python_version(),
    }
    print(f"{'what':<34} {'images':>7} {'seconds':>9} {'images/s':>9}")
    print(f"{'(a) read+decode+sha256, 1 process':<34} {count:>7} {plain_s:>9.3f} {plain_rate:>9.1f}")
    print(f"{f'(b) ingest(), workers={args.workers}':<34} {count:>7} {ingest_s:>9.3f} {ingest_rate:>9.1f}")
    print(f"ratio (b)/(a) = {ratio:.2f}  (goal >= {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    print(f"work dir {result['work_dir']}, load average {result['load_average_1min']} on {os.cpu_count()} cores")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
