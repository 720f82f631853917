"""Benchmark: ingest throughput against the floor of any reader (read + decode + hash, one process).

Writes ~2000 100x100 RAF-DB-layout JPEGs (tests' fixture writer), then times, over the same files and
interleaved (plain, ingest, plain, ingest, ... so that load from other processes hits both sides):
  (a) a plain loop: read bytes, PIL decode, sha256; single process: what any reader must pay;
  (b) fer_core.data.ingest.ingest() with the project's data config (params.yaml: png storage, stored
      deflate, data.png_compress_level=0) and data.workers=2: decode, resize, encode, hash, write,
      manifest, carve, atomic rename. The goal is judged on this row: ingest rate >= 0.7 x plain rate.
  (c) the same with data.image_format=jpeg: RAF-DB's aligned JPEGs are stored byte for byte after
      the verifying decode;
  (d) the same with data.png_compress_level=1 (smaller files, the encoder cost the old default paid).
Each ingest variant is timed --repeat times, each time right after a plain-loop run; its ratio is the
best of its own plain runs over its best ingest (wall clock; the goal), printed beside the median of
the back-to-back pairs' ratios. CPU seconds (user + system of the
process and ingest's workers) are printed beside them: on a machine shared with other jobs the wall
ratio falls when the second core is busy elsewhere, the CPU ratio (plain CPU / ingest CPU) does not.
Prints a table and writes bench/results/ingest.json.

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
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from fer_core.config import load_config  # noqa: E402
from fer_core.data.ingest import ingest  # noqa: E402
from fer_core.io import write_json  # noqa: E402
from tests.data.fixtures import rafdb_rows, write_rafdb  # noqa: E402

GOAL_RATIO = 0.7


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (ingest's worker processes), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain_loop(files: list[Path]) -> tuple[float, float]:
    """(wall, CPU) seconds to read, decode and hash every file in one process: the reference floor."""
    cpu, start = cpu_seconds(), time.perf_counter()
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        hashlib.sha256(data).hexdigest()
    return time.perf_counter() - start, cpu_seconds() - cpu


VARIANTS: dict[str, dict] = {          # name -> data config overrides; the first is the goal row
    "params.yaml": {},
    "jpeg (stored as is)": {"image_format": "jpeg"},
    "png level 1": {"image_format": "png", "png_compress_level": 1},
}


def timed_ingest(root: Path, out: Path, workers: int, overrides: dict) -> tuple[float, float, dict]:
    """(wall, CPU of this process and the workers, summary) of one complete ingest into a new folder.

    The config is the project's data config (params.yaml) at the sources' 100x100 size with `workers`.
    """
    config = replace(load_config(REPO / "params.yaml").data, image_size=100, workers=workers, **overrides)
    cpu, start = cpu_seconds(), time.perf_counter()
    summary = ingest("rafdb", root, out, config, progress=False)
    return time.perf_counter() - start, cpu_seconds() - cpu, summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class-train", type=int, default=229)
    parser.add_argument("--per-class-test", type=int, default=57)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings for each side")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the data lives (default: system temp)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest.json")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    plain_times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}  # the run just before
    runs: dict[str, list[tuple[float, float, dict]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=args.work_dir) as tmp:
        root = write_rafdb(Path(tmp) / "rafdb", rafdb_rows(args.per_class_train, args.per_class_test), size=100)
        files = sorted((root / "Image" / "aligned").iterdir())
        plain_loop(files)  # warm the page cache so both sides read from memory
        for run in range(args.repeat):
            for index, (name, overrides) in enumerate(VARIANTS.items()):
                plain_times[name].append(plain_loop(files))
                # a fresh output folder each time: replacing an old one would time its deletion too
                runs[name].append(timed_ingest(root, Path(tmp) / f"prepared-{index}-{run}", args.workers, overrides))
        sizes = {name: sum(f.stat().st_size for f in (Path(tmp) / f"prepared-{index}-0" / "images").rglob("*"))
                 for index, name in enumerate(VARIANTS)}

    count = len(files)
    # Each variant is compared with its own plain runs (same number of samples, taken just before it):
    # ratio = best plain / best ingest, and the median of the back-to-back pairs' ratios beside it.
    rows = {}
    for name, timings in runs.items():
        seconds, cpu, summary = min(timings, key=lambda run: run[0])
        assert all(run[2]["num_images"] == count for run in timings), summary  # complete ingests only
        own_plain_s, own_plain_cpu = min(plain_times[name])
        rows[name] = {"seconds": round(seconds, 4), "images_per_s": round(count / seconds, 1),
                      "ratio": round(own_plain_s / seconds, 3),
                      "paired_ratio_median": round(statistics.median(
                          plain[0] / run[0] for plain, run in zip(plain_times[name], timings)), 3),
                      "cpu_seconds": round(cpu, 4), "cpu_ratio": round(own_plain_cpu / cpu, 3),
                      "plain_seconds": round(own_plain_s, 4), "config": VARIANTS[name],
                      "stored_mb": round(sizes[name] / 1e6, 1)}
    plain_s, plain_cpu = min(min(times) for times in plain_times.values())
    plain_rate = count / plain_s
    goal_name = next(iter(VARIANTS))
    ratio = rows[goal_name]["ratio"]
    project = load_config(REPO / "params.yaml").data
    rows[goal_name]["config"] = {"image_format": project.image_format, "png_compress_level": project.png_compress_level}
    result = {
        "images": count, "image_size": "100x100 JPEG -> 100x100", "repeat": args.repeat,
        "command": "python bench/bench_ingest.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "plain_loop": {"seconds": round(plain_s, 4), "images_per_s": round(plain_rate, 1), "processes": 1,
                       "cpu_seconds": round(plain_cpu, 4)},
        "ingest": {**rows[goal_name], "workers": args.workers},
        "variants": rows,
        "ratio": ratio, "goal_ratio": GOAL_RATIO, "meets_goal": ratio >= GOAL_RATIO,
        "work_dir": str(args.work_dir or tempfile.gettempdir()),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
    }
    print(f"{'what':<40} {'images':>7} {'seconds':>9} {'images/s':>9} {'ratio':>6} {'paired':>6} {'CPU s':>7} "
          f"{'CPU ratio':>9} {'MB':>6}")
    print(f"{'(a) read+decode+sha256, 1 process':<40} {count:>7} {plain_s:>9.3f} {plain_rate:>9.1f} {'':>6} {'':>6} "
          f"{plain_cpu:>7.3f}")
    for letter, (name, row) in zip("bcd", rows.items()):
        shown = f"{name} ({row['config']['image_format']})" if letter == "b" else name
        label = f"({letter}) ingest {shown}, workers={args.workers}"
        print(f"{label:<40} {count:>7} {row['seconds']:>9.3f} {row['images_per_s']:>9.1f} {row['ratio']:>6.2f} "
              f"{row['paired_ratio_median']:>6.2f} {row['cpu_seconds']:>7.3f} {row['cpu_ratio']:>9.2f} "
              f"{row['stored_mb']:>6.1f}")
    print(f"ratio (b)/(a) = {ratio:.2f}  (goal >= {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    print(f"work dir {result['work_dir']}, load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
