"""Calibrate the synthetic benchmark: does `fer data synth` behave like RAF-DB for a plain model?

At the CPU profile (fer_core/profiles.py), a plain ResNet-18 with cross entropy (no CBAM, no mixing, no
class weights) is trained on clean labels through the real path (`fer data synth` -> RAF-DB ingest ->
training engine -> evaluation on the test split), and a raw-pixel logistic-regression probe is fitted
on the same train split. Targets (issue "A model that recognizes expressions"):

- CNN clean test accuracy between 80 % and 92 % (published RAF-DB ResNet-18 baselines: 84-89 %);
- the smallest classes (fear, disgust) clearly behind the largest (happy, neutral);
- the main confusions between classes that share cues (fear/surprise, disgust/anger, sad/neutral);
- the linear probe far below the CNN (the task needs a CNN).

    .venv/bin/python -m bench.calibrate_synth [--scale 0.3] [--epochs 8] [--seed 0] [--work DIR]

Prints the figures and writes bench/results/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fer_core.config import Config, DataConfig, SynthConfig  # noqa: E402
from fer_core.io import write_json  # noqa: E402
from fer_core.profiles import CPU_PROFILE  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "calibration.json"
BASELINE = {"model.cbam": False, "model.mixing": False, "weights.scheme": "none"}


def prepare(work: Path, scale: float, seed: int) -> Path:
    """Render and ingest a clean synthetic set once per (scale, seed)."""
    from fer_core.data.ingest import ingest
    from fer_core.data.synth import synthesize

    data = work / f"data-s{scale}-seed{seed}"
    if (data / "manifest.csv").is_file():
        return data
    raw = work / f"synth-s{scale}-seed{seed}"
    synthesize(raw, SynthConfig(scale=scale, seed=seed), progress=False)
    ingest("rafdb", raw, data, DataConfig(), progress=False)
    return data


def split_arrays(data: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A split as [N, size*size*3] float pixels in [0, 1] and labels (what the probe sees)."""
    from fer_core.data.dataset import FERDataset
    from fer_core.data.transforms import eval_transform

    dataset = FERDataset(data, split, eval_transform(size))
    xs, ys = [], []
    for index in range(len(dataset)):
        image, label = dataset[index]
        xs.append(image.numpy().ravel())
        ys.append(int(label))
    return np.stack(xs), np.asarray(ys)


def linear_probe(data: Path, size: int) -> dict[str, float]:
    """Multinomial logistic regression on standardised raw pixels (train split -> test split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = split_arrays(data, "train", size)
    x_test, y_test = split_arrays(data, "test", size)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=300, C=0.01).fit(scaler.transform(x_train), y_train)
    predicted = probe.predict(scaler.transform(x_test))
    return {"accuracy": float((predicted == y_test).mean()),
            "mean_class_accuracy": float(balanced_accuracy_score(y_test, predicted)),
            "majority_rate": float(np.bincount(y_test).max() / len(y_test))}


def top_confusions(confusion: list[list[int]], names: list[str], count: int = 5) -> list[dict[str, Any]]:
    """The largest off-diagonal cells as (true, predicted, share of the true class)."""
    matrix = np.asarray(confusion, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
    share = matrix / totals
    np.fill_diagonal(share, 0)
    order = np.dstack(np.unravel_index(np.argsort(-share, axis=None), share.shape))[0][:count]
    return [{"true": names[i], "predicted": names[j], "share": round(float(share[i, j]), 3)} for i, j in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=int(CPU_PROFILE["train.epochs"]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="keep datasets and runs here (default: a temp folder)")
    parser.add_argument("--no-probe", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from fer_core.evaluation.evaluate import evaluate_run
    from fer_core.training.engine import train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="fer-calibrate-") as temp:
        work = Path(args.work) if args.work else Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        data = prepare(work, args.scale, args.seed)
        prepared = time.perf_counter()
        config = Config().override({**CPU_PROFILE, **BASELINE, "train.epochs": args.epochs,
                                    "train.seed": args.seed})
        run_dir = work / f"run-baseline-s{args.scale}-seed{args.seed}-e{args.epochs}"
        result = train(config, data, run_dir, resume=False, export=False)
        trained = time.perf_counter()
        report = evaluate_run(run_dir, data, split="test", config=config)
        names = list(report["per_class_recall"])
        probe = None if args.no_probe else linear_probe(data, config.train.image_size)
        out = {
            "command": "python -m bench.calibrate_synth " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
                        "torch": torch.__version__},
            "scale": args.scale, "epochs": args.epochs, "seed": args.seed, "profile": {**CPU_PROFILE, **BASELINE},
            "cnn": {"accuracy": report["accuracy"], "mean_class_accuracy": report["mean_class_accuracy"],
                    "macro_f1": report["macro_f1"], "per_class_recall": report["per_class_recall"],
                    "top_confusions": top_confusions(report["confusion_matrix"], names),
                    "best_epoch": result.best_epoch, "history": result.history},
            "linear_probe": probe,
            "seconds": {"data": round(prepared - started, 1), "train": round(trained - prepared, 1),
                        "total": round(time.perf_counter() - started, 1)},
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS, out)
    cnn = out["cnn"]
    print(f"plain ResNet-18 CE, clean labels: test accuracy {cnn['accuracy']:.3f}, mean class accuracy "
          f"{cnn['mean_class_accuracy']:.3f} (best epoch {cnn['best_epoch']}/{args.epochs})")
    print("per-class recall: " + ", ".join(f"{k} {v:.2f}" for k, v in cnn["per_class_recall"].items()))
    print("top confusions:   " + ", ".join(f"{c['true']}->{c['predicted']} {c['share']:.2f}"
                                           for c in cnn["top_confusions"]))
    if probe:
        print(f"raw-pixel logistic regression: accuracy {probe['accuracy']:.3f}, mean class accuracy "
              f"{probe['mean_class_accuracy']:.3f} (majority class {probe['majority_rate']:.3f})")
    print(f"seconds: {out['seconds']}  -> {RESULTS.relative_to(ROOT)}")
    print(json.dumps({"accuracy": cnn["accuracy"], "mean_class_accuracy": cnn["mean_class_accuracy"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
