"""The paper's ablation on the synthetic RAF-DB-shaped set: one setting changes per row.

Rows (each exactly one config setting away from the previous one, METHOD.md section 6):

    baseline     ResNet-18, model.cbam=false, model.mixing=false, weights.scheme=none  (plain CE)
    +weights     weights.scheme=inverse                       (METHOD's default class weights)
    +cbam        model.cbam=true
    +mixing      model.mixing=true                            (= the full method, params.yaml's defaults)

crossed with label noise (0 % and 30 % of train labels flipped at random by `fer data synth --noise-rate`;
the val split is carved from the noisy train split, so model selection sees noisy labels too; the test
labels are never flipped, so test metrics are against clean labels) and training seeds.

Every dataset is rendered once per noise level by `fer data synth` and prepared by `fer data ingest
--format rafdb` (the real path a user takes); every run is `fer_core.training.engine.train` followed by
`fer_core.evaluation.evaluate.evaluate_run` on the test split, with the synth truth file for the
noisy-label AUROC (how well the learned uncertainty ranks flipped train labels above clean ones).

    .venv/bin/python -m bench.ablation --profile quick            # CPU, 16 runs, ~20 min on 2 idle cores
    .venv/bin/python -m bench.ablation --profile full --work /scratch/ablation   # GPU settings

Writes bench/results/ablation.json after every run (a rerun with the same --out and --work skips the
runs already there, so an interrupted ablation continues) and prints a table of mean +- std.
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
from fer_core.io import read_json, write_json  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ablation.json"

# (name, the one override that distinguishes it from the previous row); overrides accumulate.
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("baseline", {"model.arch": "resnet18", "model.cbam": False, "model.mixing": False, "weights.scheme": "none"}),
    ("+weights", {"weights.scheme": "inverse"}),
    ("+cbam", {"model.cbam": True}),
    ("+mixing", {"model.mixing": True}),
]

PROFILES: dict[str, dict[str, Any]] = {
    # CPU: 10 % of the RAF-DB list (1,105 train / 121 val / 306 test images), 64 px, 6 epochs, from
    # scratch. lr 1e-3 / fc 1e-2 (5x METHOD's 2e-4 / 2e-3): at METHOD's rate a from-scratch ResNet-18
    # barely leaves chance in 6 epochs (probe: train acc 0.22 after 5 epochs). About 75 s per run on 2
    # idle cores (16 runs ~20 min); far longer when the cores are shared.
    "quick": {
        "synth": {"scale": 0.1, "image_size": 64, "seed": 0},
        "noise_rates": [0.0, 0.3],
        "seeds": [0, 1],
        "train": {
            "data.image_size": 64, "train.image_size": 64, "train.epochs": 6, "train.batch_size": 64,
            "train.lr": 1e-3, "train.lr_fc": 1e-2, "train.workers": 0, "train.device": "cpu",
            "train.checkpoint_every_steps": 0, "train.early_stopping_patience": 0, "evaluate.batch_size": 128,
        },
    },
    # GPU: METHOD.md's recipe (full RAF-DB-sized list, 100 px stored, 224 px input, 60 epochs), 3 seeds,
    # the three noise levels of the paper plus clean.
    "full": {
        "synth": {"scale": 1.0, "image_size": 100, "seed": 0},
        "noise_rates": [0.0, 0.1, 0.2, 0.3],
        "seeds": [0, 1, 2],
        "train": {
            "data.image_size": 100, "train.image_size": 224, "train.epochs": 60, "train.batch_size": 64,
            "train.workers": 4, "train.device": "auto",
        },
    },
}

METRICS = ("accuracy", "mean_class_accuracy", "macro_f1", "ece", "noise_auroc")


def row_configs(base: Config, profile: dict[str, Any]) -> list[tuple[str, Config, dict[str, Any]]]:
    """[(row name, config, the accumulated overrides)], each row one setting away from the previous."""
    overrides = dict(profile["train"])
    out = []
    for name, change in ROWS:
        overrides.update(change)
        out.append((name, base.override(overrides), dict(overrides)))
    return out


def noise_tag(rate: float) -> str:
    return f"noise{int(round(rate * 100)):02d}"


def prepare_data(work: Path, profile: dict[str, Any], rate: float) -> tuple[Path, Path]:
    """Render (fer data synth) and prepare (fer data ingest --format rafdb) one noise level, once."""
    fer = Path(sys.executable).with_name("fer")
    synth_dir, data_dir = work / f"synth-{noise_tag(rate)}", work / f"data-{noise_tag(rate)}"
    s = profile["synth"]
    recipe = {"scale": s["scale"], "image_size": s["image_size"], "seed": s["seed"], "noise": "",
              "noise_rate": rate}
    stamp = data_dir / "ablation_recipe.json"
    if stamp.is_file() and read_json(stamp) == {**recipe, "data.image_size": profile["train"]["data.image_size"]}:
        return synth_dir, data_dir
    subprocess.run([str(fer), "data", "synth", "--out", str(synth_dir), "--scale", str(s["scale"]),
                    "--image-size", str(s["image_size"]), "--seed", str(s["seed"]), "--noise-rate", str(rate)],
                   check=True)
    subprocess.run([str(fer), "data", "ingest", "--format", "rafdb", "--source", str(synth_dir),
                    "--out", str(data_dir), "--set", f"data.image_size={profile['train']['data.image_size']}"],
                   check=True)
    write_json(stamp, {**recipe, "data.image_size": profile["train"]["data.image_size"]})
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
        },
        "per_class_recall": report.get("per_class_recall"),
        "best_epoch": result.best_epoch, "epochs_completed": result.epochs_completed,
        "best_val": result.best_metrics,
        "num_flipped_train": noise.get("num_flipped"), "num_train": noise.get("num_train"),
        "num_test": report.get("num_samples"),
        "seconds": round(done - started, 1), "train_seconds": round(trained - started, 1),
        "eval_seconds": round(done - trained, 1),
    }


def _mean_std(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (row, noise): mean and sample std (n-1) over seeds of every metric and of the seconds."""
    out = []
    for noise in sorted({r["noise"] for r in runs}):
        for name, _ in ROWS:
            group = [r for r in runs if r["row"] == name and r["noise"] == noise]
            if not group:
                continue
            out.append({"row": name, "noise": noise, "seeds": [r["seed"] for r in group],
                        **{m: _mean_std([r["metrics"].get(m) for r in group]) for m in METRICS},
                        "seconds": _mean_std([r["seconds"] for r in group])})
    return out


def paired_deltas(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row minus the previous row, paired by (noise, seed): what the one changed setting did."""
    index = {(r["row"], r["noise"], r["seed"]): r for r in runs}
    out = []
    for (prev, _), (name, _) in zip(ROWS, ROWS[1:]):
        for noise in sorted({r["noise"] for r in runs}):
            seeds = sorted(seed for (row, n, seed) in index if row == name and n == noise
                           and (prev, noise, seed) in index)
            if not seeds:
                continue
            entry = {"row": name, "vs": prev, "noise": noise, "seeds": seeds}
            for metric in ("accuracy", "mean_class_accuracy", "macro_f1"):
                diffs = [index[(name, noise, s)]["metrics"][metric] - index[(prev, noise, s)]["metrics"][metric]
                         for s in seeds]
                entry[metric] = {**_mean_std(diffs), "per_seed": diffs}
            out.append(entry)
    return out


def fmt(stat: dict[str, Any], scale: float = 100.0) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("n") == 1:  # one seed: no spread to show
        return f"{stat['mean'] * scale:.1f}"
    return f"{stat['mean'] * scale:.1f} ± {stat['std'] * scale:.1f}"


def table(summary: list[dict[str, Any]]) -> str:
    header = ("| noise | row | seeds | accuracy % | mean class acc % | macro-F1 % | ECE % | noisy-label AUROC "
              "| s/run |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    # the AUROC means something only where the uncertainty head was trained, i.e. with mixing on
    mixing_rows = {"+mixing"}
    for s in summary:
        auroc = "-"
        if s["row"] in mixing_rows and s["noise_auroc"]["mean"] is not None:
            auroc = f"{s['noise_auroc']['mean']:.3f}"
            if s["noise_auroc"]["n"] > 1:
                auroc += f" ± {s['noise_auroc']['std']:.3f}"
        lines.append(f"| {int(round(s['noise'] * 100))} % | {s['row']} | {len(s['seeds'])} | {fmt(s['accuracy'])} | "
                     f"{fmt(s['mean_class_accuracy'])} | {fmt(s['macro_f1'])} | {fmt(s['ece'])} | {auroc} | "
                     f"{s['seconds']['mean']:.0f} |")
    return "\n".join(lines)


def delta_table(deltas: list[dict[str, Any]]) -> str:
    """Each row minus the previous one, paired by seed: mean (per-seed values), in points."""
    lines = ["| noise | change | Δ accuracy | Δ mean class acc | Δ macro-F1 |", "|---|---|---|---|---|"]
    for d in deltas:
        cells = []
        for metric in ("accuracy", "mean_class_accuracy", "macro_f1"):
            per_seed = ", ".join(f"{v * 100:+.1f}" for v in d[metric]["per_seed"])
            cells.append(f"{d[metric]['mean'] * 100:+.1f} ({per_seed})")
        lines.append(f"| {int(round(d['noise'] * 100))} % | {d['vs']} → {d['row']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (profile's default)")
    parser.add_argument("--noise", type=float, nargs="+", default=None, help="label-noise rates (profile's)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's train.epochs")
    parser.add_argument("--scale", type=float, default=None, help="override the profile's synth scale")
    parser.add_argument("--work", type=Path, default=None,
                        help="datasets and run folders (default: $FER_HOME/ablation-<profile> or "
                             "~/.cache/fer/ablation-<profile>)")
    parser.add_argument("--params", default=None, help="params.yaml the rows start from (default ./params.yaml)")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already recorded in --out")
    parser.add_argument("--table", action="store_true", help="only print the tables of the runs in --out")
    args = parser.parse_args(argv)
    if args.table:
        recorded = read_json(args.out)
        print(table(recorded["summary"]))
        print()
        print(delta_table(recorded["paired_deltas"]))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fer_core.training.engine").setLevel(logging.INFO)  # one line per epoch

    profile = json.loads(json.dumps(PROFILES[args.profile]))
    if args.seeds:
        profile["seeds"] = args.seeds
    if args.noise:
        profile["noise_rates"] = args.noise
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
    if args.out.is_file() and not args.fresh:
        previous = read_json(args.out)
        if previous.get("settings", {}).get("train") == profile["train"] and \
                previous.get("settings", {}).get("synth") == profile["synth"]:
            runs = list(previous.get("runs", []))
    done = {(r["row"], r["noise"], r["seed"]) for r in runs}
    started = time.perf_counter()
    wall_before = sum(r["seconds"] for r in runs)

    def save() -> None:
        summary = summarise(runs)
        # what the recorded runs cover (a continued ablation may have run other seeds/noise levels)
        settings["seeds_run"] = sorted({r["seed"] for r in runs})
        settings["noise_rates_run"] = sorted({r["noise"] for r in runs})
        write_json(args.out, {
            "profile": args.profile, "settings": settings,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "wall_seconds": round(wall_before + time.perf_counter() - started, 1),
            "runs": runs, "summary": summary, "paired_deltas": paired_deltas(runs),
        })

    total = len(profile["noise_rates"]) * len(profile["seeds"]) * len(rows)
    datasets = {rate: prepare_data(work, profile, rate) for rate in profile["noise_rates"]}
    # seed outermost: a cut-short ablation still holds every (row, noise) cell for the first seed(s)
    for seed in profile["seeds"]:
        for rate in profile["noise_rates"]:
            synth_dir, data_dir = datasets[rate]
            for name, config, _ in rows:
                if (name, rate, seed) in done:
                    continue
                config = config.override({"train.seed": seed})
                run_dir = work / "runs" / noise_tag(rate) / f"seed{seed}" / name.replace("+", "plus-")
                print(f"[{len(runs) + 1}/{total}] noise {rate:.0%} seed {seed} {name} ...", flush=True)
                record = run_one(config, data_dir, synth_dir / "synth_truth.csv", run_dir)
                runs.append({"row": name, "noise": rate, "seed": seed, "run_dir": str(run_dir), **record})
                m = record["metrics"]
                print(f"    acc {m['accuracy']:.3f} mca {m['mean_class_accuracy']:.3f} f1 {m['macro_f1']:.3f} "
                      f"auroc {m['noise_auroc'] if m['noise_auroc'] is None else round(m['noise_auroc'], 3)} "
                      f"best epoch {record['best_epoch']} ({record['seconds']:.0f} s)", flush=True)
                save()
    save()
    print(table(summarise(runs)))
    print()
    print(delta_table(paired_deltas(runs)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
