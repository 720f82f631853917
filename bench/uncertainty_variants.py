"""Why the learned uncertainty trails softmax confidence: one setting changed per variant (issue 27).

Each variant is METHOD's formulation at the demo profile (`make run`'s data: the synthetic RAF-DB-shaped
set at scale 0.3, clean labels; fer_core/profiles.py's CPU profile, 12 epochs, mixing from epoch 5)
with exactly one setting changed:

    method        the CPU profile as `make run` trains it (METHOD's heads, 0.5/0.5 add-up loss)
    logvar-no-bn  model.logvar_bn=false        the logvar head without its closing BatchNorm1d
    head-pool-3   model.head_pool=3            the heads keep the 3x3 map instead of global pooling
    warmup-2      train.mixing_warmup_epochs=2 mixing (the only gradient the logvar head gets) 2 epochs sooner
    lam-loss      train.mix_loss=lam           RUL-style add-up loss weighted by lam_i / 1 - lam_i
    logvar-lr-10x train.lr_logvar=0.01         the logvar head at 10x the trunk's learning rate

Every run is the user's path: `fer train` then `fer evaluate` (test split, the synthetic truth file for
the ambiguous-face AUROC) in a subprocess with `--threads` torch threads; `--jobs` runs at once. A run
whose RUN/metrics.json exists is read, not retrained (an interrupted sweep continues).

    .venv/bin/python -m bench.uncertainty_variants --work /tmp/uv            # renders make run's data once
    .venv/bin/python -m bench.uncertainty_variants --work /tmp/uv --data DIR --only method lam-loss

Writes bench/results/uncertainty_variants.json and docs/results/uncertainty_variants.md (one table row
per variant: accuracy, mean class accuracy, each signal's error AUROC on val and test, the ambiguous-face
AUROC, AURC, the gap with its bootstrap interval, the review rule's unflagged accuracy, seconds per epoch).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ablation import prepare_data  # noqa: E402
from fer_core.io import atomic_write_text, read_json, write_json  # noqa: E402
from fer_core.profiles import CPU_PROFILE  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "uncertainty_variants.json"
REPORT = ROOT / "docs" / "results" / "uncertainty_variants.md"
# make run's data (fer_cli/demo.py DEMO_PROFILE): 30 % of RAF-DB's list, clean labels
DATA_PROFILE = {"synth": {"scale": 0.3, "image_size": 100, "seed": 0}, "train": {}}

VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "method": ({}, "METHOD's formulation at the CPU profile (make run's champion)"),
    "logvar-no-bn": ({"model.logvar_bn": False}, "no BatchNorm1d closing the logvar head"),
    "head-pool-3": ({"model.head_pool": 3}, "heads pool to 3x3 (the whole final map) instead of 1x1"),
    "warmup-2": ({"train.mixing_warmup_epochs": 2}, "mixing from epoch 3 instead of epoch 5"),
    "lam-loss": ({"train.mix_loss": "lam"}, "add-up loss weighted by lam_i and 1 - lam_i (RUL-style)"),
    "logvar-lr-10x": ({"train.lr_logvar": 0.01}, "logvar head at lr 1e-2 (10x the trunk's 1e-3)"),
}


def overrides(name: str) -> list[str]:
    """The --set arguments of a variant: the CPU profile, then its one change."""
    return [f"{key}={value}" for key, value in {**CPU_PROFILE, **VARIANTS[name][0]}.items()]


def run_variant(name: str, data_dir: Path, run_dir: Path, threads: int) -> dict[str, Any]:
    """`fer train` + `fer evaluate` in subprocesses (skipped when RUN/metrics.json exists), then the figures."""
    fer = str(Path(sys.executable).with_name("fer"))
    sets = [arg for item in overrides(name) for arg in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("MLFLOW_TRACKING_URI", None)  # a sweep logs to no tracking server
    started = time.perf_counter()
    if not (run_dir / "metrics.json").is_file():
        log = run_dir.with_suffix(".log")
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as out:
            for command in (["train", "--data", str(data_dir), "--out", str(run_dir), "--no-resume"],
                            ["evaluate", "--run", str(run_dir), "--data", str(data_dir)]):
                done = subprocess.run([fer, *command, *sets], env=env, stdout=out, stderr=subprocess.STDOUT)
                if done.returncode != 0:
                    raise RuntimeError(f"variant {name}: `fer {command[0]}` failed ({done.returncode}); see {log}")
        return figures(name, run_dir, time.perf_counter() - started, threads)
    # an earlier sweep's run: read, once its settings are the variant's
    recorded = read_json(run_dir / "config.json")
    for key, value in {**CPU_PROFILE, **VARIANTS[name][0]}.items():
        section, field = key.split(".")
        if recorded.get(section, {}).get(field) != value:
            raise RuntimeError(f"{run_dir} was trained with {key}={recorded.get(section, {}).get(field)!r}, "
                               f"not variant {name}'s {value!r}; remove it or use another --work")
    return figures(name, run_dir, None, threads)


def figures(name: str, run_dir: Path, seconds: float | None, threads: int) -> dict[str, Any]:
    metrics = read_json(run_dir / "metrics.json")
    history = read_json(run_dir / "history.json")
    config = read_json(run_dir / "config.json")
    trust = metrics["trust"]
    review = trust.get("review") or {}
    out: dict[str, Any] = {
        "variant": name, "change": VARIANTS[name][0], "what": VARIANTS[name][1],
        "accuracy": metrics["accuracy"], "mean_class_accuracy": metrics["mean_class_accuracy"],
        "macro_f1": metrics["macro_f1"], "best_epoch": metrics.get("best_epoch"),
        "epoch_seconds": sum(h["epoch_seconds"] for h in history) / len(history),
        "review_signal": review.get("signal"),
        "test_review_flagged_share": (review.get("test") or {}).get("flagged_share"),
        "test_review_accuracy_unflagged": (review.get("test") or {}).get("accuracy_unflagged"),
        "threads": threads, "seconds": None if seconds is None else round(seconds, 1),
        "config_model": config["model"], "config_train": config["train"],
    }
    for split in ("val", "test"):
        for signal in ("uncertainty", "confidence"):
            entry = (trust.get(split) or {}).get(signal) or {}
            if split == "val":  # the validation section keeps the AUROCs the review rule chose from
                entry = {"error_auroc": (review.get("validation") or {}).get("error_auroc", {}).get(signal)}
            for key in ("error_auroc", "aurc", "ambiguous_auroc"):
                if entry.get(key) is not None:
                    out[f"{split}_{key}_{signal}"] = entry[key]
    out.update(paired_difference(run_dir / "predictions_test.csv"))
    return out


def paired_difference(predictions_csv: Path, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The test split's error-AUROC difference, uncertainty minus confidence, with a 95 % paired bootstrap
    interval over the answers (one seed's run: how much of a gap the split's size can tell apart), and
    the Spearman correlation of the two signals."""
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    from fer_core.evaluation.trust import error_auroc

    frame = pd.read_csv(predictions_csv)
    correct = (frame["label"] == frame["prediction"]).to_numpy()
    uncertainty = frame["uncertainty"].to_numpy(dtype=float)
    confidence_risk = 1.0 - frame["confidence"].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(frame), (resamples, len(frame)))
    diffs = _auroc_rows(uncertainty[picks], ~correct[picks]) - _auroc_rows(confidence_risk[picks], ~correct[picks])
    diffs = diffs[np.isfinite(diffs)]
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"test_error_auroc_difference": error_auroc(uncertainty, correct) - error_auroc(confidence_risk, correct),
            "test_error_auroc_difference_ci95": [float(low), float(high)],
            "test_signals_spearman": float(spearmanr(uncertainty, confidence_risk).statistic)}


def _auroc_rows(scores: Any, positive: Any) -> Any:
    """AUROC of each row of `scores` for its row of `positive` (Mann-Whitney with average ranks for ties,
    what sklearn's roc_auc_score gives); NaN for a row with no positive or no negative."""
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def difference(r: dict[str, Any]) -> str:
    if r.get("test_error_auroc_difference") is None:
        return "-"
    low, high = r["test_error_auroc_difference_ci95"]
    return f"{r['test_error_auroc_difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def report_markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Learned uncertainty against softmax confidence: one setting per variant",
        "",
        f"Written by `{command}` (bench/uncertainty_variants.py). Each row is `make run`'s training (the CPU",
        "profile on the synthetic RAF-DB-shaped set at scale 0.3, clean labels, seed 0) with one setting",
        "changed; the figures are the run's `fer evaluate` on the test split (921 faces) and its validation",
        "split (369). Error AUROC: how well a signal ranks the model's wrong answers above its right ones",
        "(0.5 = chance). Ambiguous AUROC: weak-intensity faces above clear ones (synthetic truth). AURC: area",
        "under the risk-coverage curve (lower is better). Unflagged accuracy: the review rule chosen on",
        "validation (20 % flagged) applied to the test split. u - c: the test error-AUROC gap, uncertainty",
        "minus confidence, with a 95 % paired bootstrap interval over the test answers (one training seed: the",
        "interval shows what the split can tell apart, not the spread over seeds).",
        "",
        "| variant | change | accuracy | mean class acc | error AUROC val: uncertainty / confidence "
        "| error AUROC test: uncertainty / confidence | ambiguous AUROC test: u / c | AURC test: u / c "
        "| u - c test [95 % CI] | review signal, unflagged acc (flagged) | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        change = ", ".join(f"`{k}={str(v).lower() if isinstance(v, bool) else v}`"
                           for k, v in r["change"].items()) or "(none)"
        lines.append(
            f"| {r['variant']} | {change} | {fmt(r['accuracy'], 4)} | {fmt(r['mean_class_accuracy'], 4)} | "
            f"{fmt(r.get('val_error_auroc_uncertainty'))} / {fmt(r.get('val_error_auroc_confidence'))} | "
            f"**{fmt(r.get('test_error_auroc_uncertainty'))}** / {fmt(r.get('test_error_auroc_confidence'))} | "
            f"{fmt(r.get('test_ambiguous_auroc_uncertainty'))} / {fmt(r.get('test_ambiguous_auroc_confidence'))} | "
            f"{fmt(r.get('test_aurc_uncertainty'), 4)} / {fmt(r.get('test_aurc_confidence'), 4)} | "
            f"{difference(r)} | "
            f"{r.get('review_signal')}, {fmt(r.get('test_review_accuracy_unflagged'), 4)} "
            f"({fmt(r.get('test_review_flagged_share'), 3)}) | {r['epoch_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="Folder for the data and the runs.")
    parser.add_argument("--data", type=Path, default=None,
                        help="A prepared dataset (default: render and ingest make run's data in WORK).")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=None, help="Run these variants.")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="Runs at once.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= (os.cpu_count() or 1):
        parser.error(f"--jobs must be between 1 and the {os.cpu_count()} CPUs, got {args.jobs}")
    data_dir = args.data or prepare_data(args.work, DATA_PROFILE, "clean")[1]
    names = args.only or list(VARIANTS)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    recorded = {r["variant"]: r for r in (read_json(args.out)["results"] if args.out.is_file() else [])}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_variant, name, data_dir, args.work / "runs" / name, threads): name
                   for name in names}
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            recorded[result["variant"]] = result
            print(f"{result['variant']}: accuracy {result['accuracy']:.4f}, test error AUROC uncertainty "
                  f"{result.get('test_error_auroc_uncertainty')} vs confidence "
                  f"{result.get('test_error_auroc_confidence')}", flush=True)
    results = [recorded[name] for name in VARIANTS if name in recorded]
    write_json(args.out, {"data": str(data_dir), "results": results})
    command = ".venv/bin/python -m bench.uncertainty_variants --work WORK"
    args.report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.report, report_markdown(results, command))
    print(f"wrote {args.out} and {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
