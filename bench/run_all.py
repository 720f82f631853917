"""`make bench`: every benchmark in bench/, one after the other, each comparing side by side in one run.

    .venv/bin/python -m bench.run_all [--only ingest train ...] [--ablation]

Each script prints its table and writes bench/results/<name>.json; this prints a one-line summary of
each goal at the end. The ablation (bench/ablation.py, 67 min on 2 idle cores) runs only with --ablation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = {
    "ingest": ["bench/bench_ingest.py"],
    "validate": ["bench/bench_validate.py"],
    "train": ["bench/bench_train.py"],
    "gpu": ["bench/bench_gpu.py"],
    "serve": ["bench/bench_serve.py"],
    "pipeline": ["bench/bench_pipeline.py"],
    "decode16": ["bench/bench_decode16.py"],
}


def _goals(name: str) -> str:
    path = ROOT / "bench" / "results" / f"{name}.json"
    if not path.is_file():
        return "no results file"
    data = json.loads(path.read_text())
    goals = data.get("goals") or data.get("goal") or {}
    return json.dumps(goals, sort_keys=True)[:300]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    parser.add_argument("--ablation", action="store_true", help="also run the quick ablation profile")
    args = parser.parse_args()
    names = args.only or list(BENCHES)
    failures = []
    for name in names:
        print(f"\n=== bench {name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, *BENCHES[name]], cwd=ROOT)
        print(f"=== {name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
        if code:
            failures.append(name)
    if args.ablation:
        code = subprocess.call([sys.executable, "-m", "bench.ablation", "--profile", "quick"], cwd=ROOT)
        if code:
            failures.append("ablation")
    print("\n=== goals ===")
    for name in names:
        print(f"{name:<10} {_goals(name)}")
    if failures:
        print(f"failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
