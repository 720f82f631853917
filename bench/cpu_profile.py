"""Train the full method at the CPU profile on the demo's data and report test accuracy: the runs behind
the profile's settings (docs/method.md, section 5).

    .venv/bin/python -m bench.cpu_profile [--set train.mixing_warmup_epochs=0 ...] [--noise-rate 0.1]
        [--scale 0.3] [--threads 2] [--work DIR]

The data (`fer data synth` at --scale, clean or with --noise-rate uniform flips, then RAF-DB ingest) is
prepared once per (scale, noise) under --work and reused. Prints one line: the overrides, test accuracy,
mean class accuracy, per-class recall, seconds; appends it as JSON to bench/results/cpu_profile.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "cpu_profile.jsonl"


def main(argv: list[str] | None = None) -> int:
    import torch

    from fer_core.config import Config, DataConfig, SynthConfig
    from fer_core.data.ingest import ingest
    from fer_core.data.synth import synthesize
    from fer_core.evaluation.evaluate import evaluate_run
    from fer_core.profiles import CPU_PROFILE
    from fer_core.training.engine import train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--noise-rate", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "fer-cpu-profile"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work) / f"s{args.scale}-n{args.noise_rate}"
    data = work / "data"
    if not (data / "manifest.csv").is_file():
        synthesize(work / "raw", SynthConfig(scale=args.scale, noise_rate=args.noise_rate), progress=False)
        ingest("rafdb", work / "raw", data, DataConfig(), progress=False)
    config = Config().override(CPU_PROFILE).override(args.overrides)
    run = work / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.perf_counter()
    train(config, data, run, resume=False, export=False)
    report = evaluate_run(run, data, split="test", config=config)
    record = {"overrides": args.overrides, "scale": args.scale, "noise_rate": args.noise_rate,
              "accuracy": round(report["accuracy"], 4), "mean_class_accuracy": round(report["mean_class_accuracy"], 4),
              "per_class_recall": {k: round(v, 3) for k, v in report["per_class_recall"].items()},
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(record))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
