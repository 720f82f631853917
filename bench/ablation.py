"""The paper's ablation on the synthetic RAF-DB-shaped set: one setting changes per row.

Rows (each exactly one config setting away from the previous one, docs/method.md section 6):

    baseline     ResNet-18, model.cbam=false, model.mixing=false, weights.scheme=none  (plain CE)
    +weights     weights.scheme=inverse                       (METHOD's default class weights)
    +cbam        model.cbam=true
    +mixing      model.mixing=true                            (= the full method, params.yaml's defaults)

crossed with three label-noise conditions (clean; 30 % of train labels flipped to any other class,
`--noise-kind uniform`; 30 % flipped to the class's confusable partner, e.g. fear->surprise,
`--noise-kind confusable`; the val split is carved from the noisy train split, so model selection sees
noisy labels too; the test labels are never flipped) and 3 training seeds, at the CPU profile
(fer_core/profiles.py). For each claim of the paper it reports the paired delta over seeds with a 95 %
confidence interval (Student t) and a verdict: held (the interval is above 0), not held (below 0) or
inconclusive (it contains 0). For the full method it reports how the learned uncertainty ranks flipped
train labels (AUROC, goal >= 0.8) and weak-intensity faces (ambiguous AUROC) above the rest.

Every dataset is rendered once per noise level by `fer data synth` and prepared by `fer data ingest
--format rafdb` (the real path a user takes); every run is `fer_core.training.engine.train` followed by
`fer_core.evaluation.evaluate.evaluate_run` on the test split, with the synth truth file for the
noisy-label AUROC (how well the learned uncertainty ranks flipped train labels above clean ones).

    .venv/bin/python -m bench.ablation --profile quick            # CPU, 36 runs, two at a time (one thread each)
    .venv/bin/python -m bench.ablation --profile full --work /scratch/ablation   # GPU settings

`--jobs N` trains N runs at once in worker processes, each with cpu_count/N torch threads (on 2 cores
two one-thread runs finish sooner than one two-thread run at batch 32); the CPU profile's default is 2.

Writes bench/results/ablation.json after every run (a rerun with the same --out and --work skips the
runs already there, so an interrupted ablation continues), then docs/results/ablation.md (tables and
verdicts) and docs/results/ablation.png (bar chart with error bars).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fer_core.config import Config, load_config  # noqa: E402
from fer_core.io import atomic_write_text, read_json, write_json  # noqa: E402
from fer_core.profiles import CPU_PROFILE  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ablation.json"
REPORT = ROOT / "docs" / "results" / "ablation.md"
CHART = ROOT / "docs" / "results" / "ablation.png"
# (condition tag, flip rate, kind of flips)
CONDITIONS: dict[str, tuple[float, str]] = {"clean": (0.0, "uniform"), "uniform30": (0.3, "uniform"),
                                            "confusable30": (0.3, "confusable")}
# The paper's claims as (row, vs, metric, which conditions, statement)
CLAIMS: list[tuple[str, str, str, tuple[str, ...], str]] = [
    ("+weights", "baseline", "mean_class_accuracy", ("clean",),
     "class weights raise mean class accuracy"),
    ("+cbam", "+weights", "accuracy", ("clean",), "CBAM recovers overall accuracy lost to weighting"),
    ("+mixing", "+cbam", "accuracy", ("uniform30", "confusable30"), "mixing raises accuracy under label noise"),
]

# (name, the one override that distinguishes it from the previous row); overrides accumulate.
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("baseline", {"model.arch": "resnet18", "model.cbam": False, "model.mixing": False, "weights.scheme": "none"}),
    ("+weights", {"weights.scheme": "inverse"}),
    ("+cbam", {"model.cbam": True}),
    ("+mixing", {"model.mixing": True}),
]

PROFILES: dict[str, dict[str, Any]] = {
    # CPU: the method's CPU profile (48 px, small stem, global head pooling, clipped weights) on 15 % of
    # the RAF-DB list (~1,650 train images), 6 epochs with mixing from epoch 3 (the profile's 12 epochs
    # mix from epoch 5): ~2 min a run on 2 idle cores, 36 runs.
    "quick": {
        "synth": {"scale": 0.15, "image_size": 100, "seed": 0},
        "conditions": ["clean", "uniform30", "confusable30"],
        "seeds": [0, 1, 2],
        "train": {**CPU_PROFILE, "train.epochs": 6, "train.mixing_warmup_epochs": 2, "train.device": "cpu",
                  "evaluate.batch_size": 128},
    },
    # GPU: METHOD's recipe (full RAF-DB-sized list, 100 px stored, 224 px input, 60 epochs), 3 seeds.
    "full": {
        "synth": {"scale": 1.0, "image_size": 100, "seed": 0},
        "conditions": ["clean", "uniform30", "confusable30"],
        "seeds": [0, 1, 2],
        "train": {
            "data.image_size": 100, "train.image_size": 224, "train.epochs": 60, "train.batch_size": 64,
            "train.workers": 4, "train.device": "auto",
        },
    },
}

METRICS = ("accuracy", "mean_class_accuracy", "macro_f1", "ece", "noise_auroc", "ambiguous_auroc")
# two-sided 95 % Student t quantiles by degrees of freedom (n - 1 seeds)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def row_configs(base: Config, profile: dict[str, Any]) -> list[tuple[str, Config, dict[str, Any]]]:
    """[(row name, config, the accumulated overrides)], each row one setting away from the previous."""
    overrides = dict(profile["train"])
    out = []
    for name, change in ROWS:
        overrides.update(change)
        out.append((name, base.override(overrides), dict(overrides)))
    return out


def prepare_data(work: Path, profile: dict[str, Any], condition: str) -> tuple[Path, Path]:
    """Render (fer data synth) and prepare (fer data ingest --format rafdb) one noise condition, once."""
    fer = Path(sys.executable).with_name("fer")
    rate, kind = CONDITIONS[condition]
    synth_dir, data_dir = work / f"synth-{condition}", work / f"data-{condition}"
    s = profile["synth"]
    data_size = profile["train"].get("data.image_size", 100)
    recipe = {"scale": s["scale"], "image_size": s["image_size"], "seed": s["seed"], "noise": "",
              "noise_rate": rate, "noise_kind": kind, "data.image_size": data_size}
    stamp = work / f"recipe-{condition}.json"
    if stamp.is_file() and read_json(stamp) == recipe and (data_dir / "manifest.csv").is_file():
        return synth_dir, data_dir
    subprocess.run([str(fer), "data", "synth", "--out", str(synth_dir), "--scale", str(s["scale"]),
                    "--image-size", str(s["image_size"]), "--seed", str(s["seed"]), "--noise-rate", str(rate),
                    "--noise-kind", kind], check=True)
    subprocess.run([str(fer), "data", "ingest", "--format", "rafdb", "--source", str(synth_dir),
                    "--out", str(data_dir), "--set", f"data.image_size={data_size}"], check=True)
    write_json(stamp, recipe)
    return synth_dir, data_dir


def run_one(config: Config, data_dir: Path, truth: Path, run_dir: Path) -> dict[str, Any]:
    from fer_core.evaluation.evaluate import evaluate_run
    from fer_core.training.engine import train

    started = time.perf_counter()
    result = train(config, data_dir, run_dir, resume=False, export=False)
    trained = time.perf_counter()
    report = evaluate_run(run_dir, data_dir, split="test", config=config, truth_csv=truth)
    done = time.perf_counter()
    noise = report.get("noise") or {}
    return {
        "metrics": {
            "accuracy": report["accuracy"], "mean_class_accuracy": report["mean_class_accuracy"],
            "macro_f1": report["macro_f1"], "ece": report.get("ece"),
            # with mixing off the logvar head gets no gradient: its "uncertainty" is untrained (a control)
            "noise_auroc": noise.get("auroc"),
            "ambiguous_auroc": noise.get("ambiguous_auroc"),
        },
        "per_class_recall": report.get("per_class_recall"),
        "best_epoch": result.best_epoch, "epochs_completed": result.epochs_completed,
        "best_val": result.best_metrics,
        "num_flipped_train": noise.get("num_flipped"), "num_train": noise.get("num_train"),
        "num_test": report.get("num_samples"),
        "seconds": round(done - started, 1), "train_seconds": round(trained - started, 1),
        "eval_seconds": round(done - trained, 1),
    }


def _init_worker(threads: int) -> None:
    """A --jobs worker: its share of the cores, no progress bars (they would interleave), epoch lines."""
    import torch

    torch.set_num_threads(threads)
    # the epoch lines on stdout; stderr (the loop's progress bars) dropped: a failed run's exception
    # still reaches the parent through its future
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - the worker's lifetime
    logging.getLogger("fer_core.training.engine").setLevel(logging.INFO)


def _mean_std(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def _conditions(runs: list[dict[str, Any]]) -> list[str]:
    present = {r["noise"] for r in runs}
    return [c for c in CONDITIONS if c in present]


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (row, condition): mean and sample std (n-1) over seeds of every metric and of the seconds."""
    out = []
    for noise in _conditions(runs):
        for name, _ in ROWS:
            group = [r for r in runs if r["row"] == name and r["noise"] == noise]
            if not group:
                continue
            out.append({"row": name, "noise": noise, "seeds": [r["seed"] for r in group],
                        **{m: _mean_std([r["metrics"].get(m) for r in group]) for m in METRICS},
                        "seconds": _mean_std([r["seconds"] for r in group])})
    return out


def confidence_interval(diffs: list[float]) -> tuple[float, float] | None:
    """95 % Student t interval of the mean of paired differences (None for fewer than 2 seeds)."""
    if len(diffs) < 2:
        return None
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    half = T95.get(len(diffs) - 1, 1.96) * std / math.sqrt(len(diffs))
    return mean - half, mean + half


def paired_deltas(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row minus the previous row, paired by (condition, seed): what the one changed setting did,
    with a 95 % confidence interval and the effect size (mean delta / its std, Cohen's d_z)."""
    index = {(r["row"], r["noise"], r["seed"]): r for r in runs}
    out = []
    for (prev, _), (name, _) in zip(ROWS, ROWS[1:]):
        for noise in _conditions(runs):
            seeds = sorted(seed for (row, n, seed) in index if row == name and n == noise
                           and (prev, noise, seed) in index)
            if not seeds:
                continue
            entry = {"row": name, "vs": prev, "noise": noise, "seeds": seeds}
            for metric in ("accuracy", "mean_class_accuracy", "macro_f1"):
                diffs = [index[(name, noise, s)]["metrics"][metric] - index[(prev, noise, s)]["metrics"][metric]
                         for s in seeds]
                stats = _mean_std(diffs)
                interval = confidence_interval(diffs)
                effect = stats["mean"] / stats["std"] if stats["std"] else None
                entry[metric] = {**stats, "per_seed": diffs, "ci95": list(interval) if interval else None,
                                 "effect_size": effect}
            out.append(entry)
    return out


def verdicts(deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per claim and condition: held / not held / inconclusive from the 95 % interval."""
    out = []
    for row, vs, metric, conditions, statement in CLAIMS:
        for noise in conditions:
            match = [d for d in deltas if d["row"] == row and d["vs"] == vs and d["noise"] == noise]
            if not match:
                continue
            delta = match[0][metric]
            interval = delta["ci95"]
            if interval is None:
                verdict = "inconclusive (one seed)"
            elif interval[0] > 0:
                verdict = "held"
            elif interval[1] < 0:
                verdict = "not held"
            else:
                verdict = "inconclusive"
            out.append({"claim": statement, "row": row, "vs": vs, "metric": metric, "noise": noise,
                        "mean_delta": delta["mean"], "ci95": interval, "effect_size": delta["effect_size"],
                        "seeds": match[0]["seeds"], "verdict": verdict})
    return out


def fmt(stat: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("n") == 1:  # one seed: no spread to show
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def table(summary: list[dict[str, Any]]) -> str:
    header = ("| noise | row | seeds | accuracy % | mean class acc % | macro-F1 % | ECE % | flipped-label AUROC "
              "| ambiguous-face AUROC | s/run |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    # the AUROCs mean something only where the uncertainty head was trained, i.e. with mixing on
    for s in summary:
        aurocs = []
        for metric in ("noise_auroc", "ambiguous_auroc"):
            stat = s.get(metric) or {}
            aurocs.append(fmt(stat, 1.0, 3) if s["row"] == "+mixing" and stat.get("mean") is not None else "-")
        lines.append(f"| {s['noise']} | {s['row']} | {len(s['seeds'])} | {fmt(s['accuracy'])} | "
                     f"{fmt(s['mean_class_accuracy'])} | {fmt(s['macro_f1'])} | {fmt(s['ece'])} | {aurocs[0]} | "
                     f"{aurocs[1]} | {s['seconds']['mean']:.0f} |")
    return "\n".join(lines)


def delta_table(deltas: list[dict[str, Any]]) -> str:
    """Each row minus the previous one, paired by seed: mean [95 % CI], in points."""
    lines = ["| noise | change | Δ accuracy | Δ mean class acc | Δ macro-F1 |", "|---|---|---|---|---|"]
    for d in deltas:
        cells = []
        for metric in ("accuracy", "mean_class_accuracy", "macro_f1"):
            interval = d[metric]["ci95"]
            ci = f" [{interval[0] * 100:+.1f}, {interval[1] * 100:+.1f}]" if interval else ""
            cells.append(f"{d[metric]['mean'] * 100:+.1f}{ci}")
        lines.append(f"| {d['noise']} | {d['vs']} → {d['row']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_table(found: list[dict[str, Any]]) -> str:
    lines = ["| claim | noise | Δ (points) | 95 % CI | effect size d_z | verdict |", "|---|---|---|---|---|---|"]
    for v in found:
        ci = f"[{v['ci95'][0] * 100:+.1f}, {v['ci95'][1] * 100:+.1f}]" if v["ci95"] else "-"
        effect = f"{v['effect_size']:.2f}" if v["effect_size"] is not None else "-"
        lines.append(f"| {v['claim']} ({v['metric']}) | {v['noise']} | {v['mean_delta'] * 100:+.1f} | {ci} | "
                     f"{effect} | **{v['verdict']}** |")
    return "\n".join(lines)


def bar_chart(summary: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy and mean class accuracy per row and condition, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = [c for c in CONDITIONS if any(s["noise"] == c for s in summary)]
    rows = [name for name, _ in ROWS]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / len(rows)
    for ax, metric, title in zip(axes, ("accuracy", "mean_class_accuracy"), ("Accuracy", "Mean class accuracy")):
        for k, row in enumerate(rows):
            cells = [next((s for s in summary if s["row"] == row and s["noise"] == c), None) for c in conditions]
            means = [c[metric]["mean"] * 100 if c and c[metric]["mean"] is not None else 0 for c in cells]
            stds = [c[metric]["std"] * 100 if c and c[metric]["std"] is not None else 0 for c in cells]
            xs = [i + (k - (len(rows) - 1) / 2) * width for i in range(len(conditions))]
            bars = ax.bar(xs, means, width, yerr=stds, capsize=3, label=row)
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        ax.set_xticks(range(len(conditions)), conditions)
        ax.set_title(f"{title} (test, %; mean ± std over seeds)")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("%")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report_markdown(recorded: dict[str, Any]) -> str:
    settings = recorded["settings"]
    return "\n".join([
        "# The paper's claims on the synthetic benchmark (CPU profile)",
        "",
        f"Written by `python -m bench.ablation --profile {recorded['profile']}` from "
        f"`bench/results/ablation.json` ({len(recorded['runs'])} runs, seeds {settings.get('seeds_run')}, "
        f"{recorded['wall_seconds'] / 60:.0f} min of wall time on {recorded['machine']['cpus']} CPUs, "
        f"{settings.get('jobs', 1)} run(s) at a time). Rows add one setting each (baseline: plain ResNet-18 CE; "
        "+weights: inverse class weights clipped at 3; +cbam: CBAM in every block; +mixing: uncertainty "
        "feature mixing = the full method). Conditions: clean labels, 30 % uniform flips, 30 % flips to the "
        "confusable partner (class-dependent). Test labels are always clean. What the synthetic benchmark "
        "does and does not stand for: [docs/synthetic-benchmark.md](../synthetic-benchmark.md).",
        "",
        "![ablation](ablation.png)",
        "",
        "## Verdicts",
        "",
        verdict_table(recorded["verdicts"]),
        "",
        "## Mean ± std over seeds",
        "",
        table(recorded["summary"]),
        "",
        "## Paired deltas (each row minus the previous, same seed and data)",
        "",
        delta_table(recorded["paired_deltas"]),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, default=REPORT, help="the markdown report (and its .png chart)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (profile's default)")
    parser.add_argument("--conditions", nargs="+", choices=sorted(CONDITIONS), default=None,
                        help="noise conditions (profile's default: all three)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's train.epochs")
    parser.add_argument("--scale", type=float, default=None, help="override the profile's synth scale")
    parser.add_argument("--work", type=Path, default=None,
                        help="datasets and run folders (default: $FER_HOME/ablation-<profile> or "
                             "~/.cache/fer/ablation-<profile>)")
    parser.add_argument("--params", default=None, help="params.yaml the rows start from (default ./params.yaml)")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already recorded in --out")
    parser.add_argument("--table", action="store_true", help="only rewrite the report from the runs in --out")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs trained at once, each in its own process with cpu_count/JOBS threads "
                             "(default: 2 on a CPU profile with 2+ cores, else 1)")
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = min(2, os.cpu_count() or 1) if PROFILES[args.profile]["train"].get("train.device") == "cpu" else 1
    if not 1 <= args.jobs <= (os.cpu_count() or 1):
        parser.error(f"--jobs must be between 1 and the {os.cpu_count()} CPUs, got {args.jobs}")
    chart = args.report.with_suffix(".png")
    if args.table:
        recorded = read_json(args.out)
        bar_chart(recorded["summary"], chart)
        atomic_write_text(args.report, report_markdown(recorded))
        print(verdict_table(recorded["verdicts"]))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fer_core.training.engine").setLevel(logging.INFO)  # one line per epoch

    profile = json.loads(json.dumps(PROFILES[args.profile]))
    if args.seeds:
        profile["seeds"] = args.seeds
    if args.conditions:
        profile["conditions"] = [c for c in CONDITIONS if c in args.conditions]
    if args.epochs:
        profile["train"]["train.epochs"] = args.epochs
    if args.scale:
        profile["synth"]["scale"] = args.scale
    home = Path(os.environ.get("FER_HOME", Path.home() / ".cache" / "fer"))
    work = (args.work or home / f"ablation-{args.profile}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = load_config(args.params)
    rows = row_configs(base, profile)

    settings = {"profile": args.profile, **profile, "rows": [{"row": n, "change": c} for n, c in ROWS],
                "params": args.params or "params.yaml", "work": str(work)}
    runs: list[dict[str, Any]] = []
    wall_before = 0.0   # the wall time of earlier invocations that this one continues
    if args.out.is_file() and not args.fresh:
        previous = read_json(args.out)
        if previous.get("settings", {}).get("train") == profile["train"] and \
                previous.get("settings", {}).get("synth") == profile["synth"]:
            runs = list(previous.get("runs", []))
            wall_before = float(previous.get("wall_seconds") or sum(r["seconds"] for r in runs)) if runs else 0.0
    done = {(r["row"], r["noise"], r["seed"]) for r in runs}
    started = time.perf_counter()
    settings["jobs"] = args.jobs

    def save() -> dict[str, Any]:
        summary = summarise(runs)
        deltas = paired_deltas(runs)
        # what the recorded runs cover (a continued ablation may have run other seeds/conditions)
        settings["seeds_run"] = sorted({r["seed"] for r in runs})
        settings["conditions_run"] = _conditions(runs)
        recorded = {
            "profile": args.profile, "settings": settings,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "wall_seconds": round(wall_before + time.perf_counter() - started, 1),
            "runs": runs, "summary": summary, "paired_deltas": deltas, "verdicts": verdicts(deltas),
        }
        write_json(args.out, recorded)
        return recorded

    total = len(profile["conditions"]) * len(profile["seeds"]) * len(rows)
    datasets = {condition: prepare_data(work, profile, condition) for condition in profile["conditions"]}
    # seed outermost: a cut-short ablation still holds every (row, condition) cell for the first seed(s)
    todo = []
    for seed in profile["seeds"]:
        for condition in profile["conditions"]:
            synth_dir, data_dir = datasets[condition]
            for name, config, _ in rows:
                if (name, condition, seed) not in done:
                    run_dir = work / "runs" / condition / f"seed{seed}" / name.replace("+", "plus-")
                    todo.append(((name, condition, seed),
                                 (config.override({"train.seed": seed}), data_dir, synth_dir / "synth_truth.csv", run_dir)))

    def record(key: tuple[str, str, int], run_dir: Path, result: dict[str, Any]) -> None:
        name, condition, seed = key
        runs.append({"row": name, "noise": condition, "seed": seed, "run_dir": str(run_dir), **result})
        m = result["metrics"]
        print(f"[{len(runs)}/{total}] {condition} seed {seed} {name}: acc {m['accuracy']:.3f} "
              f"mca {m['mean_class_accuracy']:.3f} f1 {m['macro_f1']:.3f} "
              f"auroc {m['noise_auroc'] if m['noise_auroc'] is None else round(m['noise_auroc'], 3)} "
              f"best epoch {result['best_epoch']} ({result['seconds']:.0f} s)", flush=True)
        save()

    if args.jobs == 1:
        for key, job in todo:
            print(f"[{len(runs) + 1}/{total}] {' '.join(map(str, key[1:]))} {key[0]} ...", flush=True)
            record(key, job[3], run_one(*job))
    else:
        import concurrent.futures
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        print(f"{len(todo)} runs, {args.jobs} at a time, {threads} torch thread(s) each", flush=True)
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=_init_worker, initargs=(threads,)) as pool:
            pending = {pool.submit(run_one, *job): (key, job[3]) for key, job in todo}
            try:
                for future in concurrent.futures.as_completed(pending):
                    key, run_dir = pending[future]
                    record(key, run_dir, future.result())
            except BaseException:   # a failed run or Ctrl-C: the runs recorded so far stay, the rest stop
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    runs.sort(key=lambda r: (profile["seeds"].index(r["seed"]) if r["seed"] in profile["seeds"] else len(profile["seeds"]),
                             list(CONDITIONS).index(r["noise"]), [n for n, _ in ROWS].index(r["row"])))
    recorded = save()
    bar_chart(recorded["summary"], chart)
    atomic_write_text(args.report, report_markdown(recorded))
    print(table(recorded["summary"]))
    print()
    print(delta_table(recorded["paired_deltas"]))
    print()
    print(verdict_table(recorded["verdicts"]))
    print(f"wrote {args.out}, {args.report} and {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
