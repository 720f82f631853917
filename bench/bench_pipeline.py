"""Orchestration overhead: the whole pipeline on the local Kubeflow runner against the same steps run
directly (fer_core.steps, one process), on the same synthetic dataset, in the same run.

    .venv/bin/python bench/bench_pipeline.py [--scale 0.2] [--epochs 4] [--image-size 64]

overhead = pipeline wall time / sum of the direct steps - 1 (goal: under 0.30). Both sides do the same
work: ingest, validate, class weights, train, evaluate, register (MLflow on sqlite, a fresh FER_HOME
each). The pipeline's extra cost is one Python process per component (imports of torch, mlflow, GX)
and the artifact bookkeeping, so the overhead shrinks as training grows. Deploy is off on both sides.
Prints a table and writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fer_core.config import Config  # noqa: E402
from fer_core.io import write_json  # noqa: E402


def direct(config: Config, raw: Path, work: Path) -> dict[str, float]:
    """Each step in this process, timed; the same calls the components make."""
    from fer_core import steps
    from fer_core.validation.report import failure_summary

    times: dict[str, float] = {}

    def timed(name, func, *args, **kwargs):
        started = time.perf_counter()
        value = func(*args, **kwargs)
        times[name] = time.perf_counter() - started
        return value

    data, run = work / "prepared", work / "run"
    timed("ingest", steps.ingest_step, data, config, source=str(raw), fmt="rafdb")
    result = timed("validate", steps.validate_step, data, work / "report", config)
    assert result.success, failure_summary(work / "report")
    timed("class_weights", steps.class_weights_step, data, work / "weights" / "weights.json", config)
    _, run_id = timed("train", steps.train_step, data, run, config, experiment="bench-direct",
                      report_dir=work / "report", weights_dir=work / "weights")
    timed("evaluate", steps.evaluate_step, run, data, config, run_id=run_id)
    timed("register", steps.register_step, run, config, run_id=run_id, model_name="bench-direct")
    return times


def pipeline(config: Config, raw: Path, work: Path) -> float:
    from pipelines.runner import local_arguments, run_local

    arguments = local_arguments(config.override({"registry.model_name": "bench-pipeline"}), source=str(raw),
                                data_format="rafdb", experiment="bench-pipeline", deploy_model=False)
    started = time.perf_counter()
    run_local(arguments, work / "pipeline_root", cache=False)  # every step runs, as on the direct side
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline.json"))
    args = parser.parse_args()

    from fer_core.data.synth import synthesize
    from fer_core.home import quiet_third_parties

    quiet_third_parties()
    config = Config().override({"synth.scale": args.scale, "train.epochs": args.epochs,
                                "train.image_size": args.image_size, "train.batch_size": 32, "train.workers": 0,
                                "train.early_stopping_patience": 0, "train.checkpoint_every_steps": 0})
    with tempfile.TemporaryDirectory(prefix="fer-bench-pipeline-") as tmp:
        tmp_path = Path(tmp)
        raw = tmp_path / "raw"
        synthesize(raw, config.synth, progress=False)
        results = {}
        # direct first, then the pipeline, each with its own home (fresh MLflow database)
        for side in ("direct", "pipeline"):
            home = tmp_path / side
            home.mkdir()
            os.environ["FER_HOME"] = str(home)
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            if side == "direct":
                results["direct_steps_s"] = direct(config, raw, home)
            else:
                results["pipeline_s"] = pipeline(config, raw, home)
    direct_total = sum(results["direct_steps_s"].values())
    overhead = results["pipeline_s"] / direct_total - 1
    report = {
        "settings": {"scale": args.scale, "epochs": args.epochs, "image_size": args.image_size},
        "direct_steps_s": {k: round(v, 2) for k, v in results["direct_steps_s"].items()},
        "direct_total_s": round(direct_total, 2),
        "pipeline_s": round(results["pipeline_s"], 2),
        "overhead": round(overhead, 3),
        "goal": {"overhead_max": 0.30, "met": overhead < 0.30},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "command": "python bench/bench_pipeline.py " + " ".join(sys.argv[1:]),
    }
    print(f"{'step':<16}{'direct s':>10}")
    for key, value in report["direct_steps_s"].items():
        print(f"{key:<16}{value:>10.1f}")
    print(f"{'sum':<16}{direct_total:>10.1f}")
    print(f"local KFP pipeline: {results['pipeline_s']:.1f} s -> overhead {overhead:+.1%} (goal < +30%)")
    write_json(args.out, report)


if __name__ == "__main__":
    main()
