"""Evaluate a trained run on one split (the held-out test split by default): metrics.json + plots.

Loads RUN/best.pt (the best-on-validation weights; weights_only), predicts logits and the learned
uncertainty for every image with the evaluation transform, and writes:

  RUN/metrics.json (split test; other splits: RUN/metrics_<split>.json)
      accuracy, mean_class_accuracy, macro_f1, per_class_{recall,precision,f1,support}, confusion_matrix,
      ece, uncertainty {mean, median, mean/median correct vs wrong}, and, when the dataset carries the
      synthetic generator's truth (DATA/synth_truth.csv, joined on source_id = name), noise: the AUROC
      of uncertainty for flagging the flipped labels of the train split.
      trust: how well the learned uncertainty and the softmax confidence single out wrong answers on the
      validation split and on `split` (error AUROC, risk-coverage AURC, accuracy at 90/80 % coverage; for
      synthetic sets the AUROC for ambiguous faces), and the review rule chosen on validation
      (fer_core/evaluation/trust.py).
  RUN/review.json     the review rule the model is served with (registered and packaged with it)
  RUN/predictions_<split>.csv   path, label, prediction, confidence, uncertainty per image
  RUN/plots/<split>_confusion_matrix.png, <split>_per_class_recall.png, <split>_reliability.png,
      <split>_risk_coverage.png, val_risk_coverage.png, training_curves.png (from RUN/history.json)
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fer_core.config import Config, from_dict
from fer_core.data.dataset import EpochBatchSampler, FERDataset
from fer_core.data.prepared import TRUTH, read_truth
from fer_core.data.transforms import eval_transform
from fer_core import metrics as M
from fer_core.evaluation import plots, trust
from fer_core.io import atomic_write_text, read_json, write_json
from fer_core.model import FERNet, build_model
from fer_core.training.checkpoint import load_torch
from fer_core.training.distributed import pick_device

logger = logging.getLogger(__name__)

def load_best_model(run_dir: str | Path) -> tuple[FERNet, dict[str, Any]]:
    """(eval-mode CPU model, meta) from RUN/best.pt."""
    best_path = Path(run_dir) / "best.pt"
    if not best_path.is_file():
        raise FileNotFoundError(f"{best_path} not found: is {run_dir} a finished `fer train` run?")
    best = load_torch(best_path)
    meta = best["meta"]
    model_config = from_dict({"model": meta["model"]}).model
    model = build_model(model_config, int(meta["num_classes"]))
    model.load_state_dict(best["state_dict"])
    return model.eval(), meta


@torch.no_grad()
def predict(model: FERNet, dataset: FERDataset, batch_size: int, workers: int,
            device: torch.device) -> dict[str, np.ndarray]:
    """logits [N,K], uncertainty [N], labels [N] in dataset order."""
    model = model.to(device).eval()
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=False)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda")
    logits, uncertainty, labels = [], [], []
    for images, targets in loader:
        batch_logits, batch_uncertainty = model.predict(images.to(device))
        logits.append(batch_logits.float().cpu())
        uncertainty.append(batch_uncertainty.float().cpu())
        labels.append(targets)
    return {
        "logits": torch.cat(logits).numpy().astype(np.float64),
        "uncertainty": torch.cat(uncertainty).numpy().astype(np.float64),
        "labels": torch.cat(labels).numpy().astype(np.int64),
    }


def is_ambiguous(clean_label_name: str, intensity: float) -> bool:
    """A face whose expression is weak: an expressive face below 0.4 intensity, or a neutral face that
    borrows more than 0.3 of another class's cues (synth intensity below 0.7)."""
    return intensity < (0.7 if clean_label_name == "neutral" else 0.4)


def noise_detection(model: FERNet, data_dir: Path, truth_path: Path, image_size: int, batch_size: int,
                    workers: int, device: torch.device) -> dict[str, Any]:
    """How well the learned uncertainty ranks flipped train labels above clean ones (AUROC)."""
    from sklearn.metrics import roc_auc_score

    truth = read_truth(truth_path)
    train_set = FERDataset(data_dir, "train", eval_transform(image_size))
    matched = [(i, truth[row.source_id].flipped) for i, row in enumerate(train_set.rows) if row.source_id in truth]
    result: dict[str, Any] = {"truth_file": str(truth_path), "num_train": len(train_set), "num_matched": len(matched),
                              "num_flipped": sum(flag for _, flag in matched), "auroc": None}
    if not matched:
        result["note"] = "no train source_id matched a name in the truth file"
        return result
    flags = np.array([flag for _, flag in matched], dtype=bool)
    if flags.all() or not flags.any():
        result["note"] = "the matched train labels are all flipped or all clean: AUROC undefined"
        return result
    uncertainty = predict(model, train_set, batch_size, workers, device)["uncertainty"]
    scores = uncertainty[[i for i, _ in matched]]
    result.update(
        auroc=float(roc_auc_score(flags, scores)),
        mean_uncertainty_flipped=float(scores[flags].mean()),
        mean_uncertainty_clean=float(scores[~flags].mean()),
    )
    # how the uncertainty ranks weak (ambiguous) faces above clear ones, among correctly labelled faces
    graded = [(score, truth[train_set.rows[i].source_id]) for (i, flag), score in zip(matched, scores) if not flag]
    pairs = [(score, is_ambiguous(row.clean_label_name, row.intensity)) for score, row in graded
             if row.intensity is not None and row.clean_label_name is not None]
    weak = np.array([flag for _, flag in pairs], dtype=bool)
    if pairs and weak.any() and not weak.all():
        weak_scores = np.array([score for score, _ in pairs])
        result.update(ambiguous_auroc=float(roc_auc_score(weak, weak_scores)), num_ambiguous_clean=int(weak.sum()))
    return result


# The figures a run is judged by, with the words people read them as (scores file, MLflow, the
# pipeline's console line and evaluation page all use this one list).
HEADLINE = (("accuracy", "accuracy"), ("mean_class_accuracy", "mean class accuracy"), ("macro_f1", "macro-F1"),
            ("ece", "ECE"))


def trust_section(model: FERNet, data_dir: Path, split: str, out: dict[str, np.ndarray], probs: np.ndarray,
                  dataset: FERDataset, image_size: int, config: Config, device: torch.device,
                  truth_path: Path | None) -> tuple[dict[str, Any], trust.ReviewRule | None]:
    """The trust signals on the validation split and on `split`, and the review rule chosen on validation
    (None when the data has no validation split with both right and wrong answers)."""
    section: dict[str, Any] = {}
    val_set = FERDataset(data_dir, "val", eval_transform(image_size)) if split != "val" else dataset
    if len(val_set) == 0:
        return {"note": "no validation split: no review rule"}, None
    val_out = out if val_set is dataset else predict(model, val_set, config.evaluate.batch_size, config.train.workers,
                                                     device)
    val_probs = probs if val_set is dataset else M.softmax(val_out["logits"])
    val_confidence, val_correct = val_probs.max(axis=1), val_probs.argmax(axis=1) == val_out["labels"]
    if val_correct.all() or not val_correct.any():
        return {"note": "the validation answers are all right or all wrong: no review rule"}, None
    rule = trust.choose_review_rule(val_confidence, val_out["uncertainty"], val_correct, config.evaluate.review_flagged)
    section["val"] = trust.signals_report(val_confidence, val_out["uncertainty"], val_correct, rule.combination)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == out["labels"]
    ambiguous = None
    if truth_path is not None and truth_path.is_file():
        truth = read_truth(truth_path)
        rows = [truth.get(row.source_id) for row in dataset.rows]
        if all(row is not None and row.intensity is not None and row.clean_label_name for row in rows):
            ambiguous = np.array([is_ambiguous(row.clean_label_name, row.intensity) for row in rows])
    section[split] = trust.signals_report(confidence, out["uncertainty"], correct, rule.combination, ambiguous)
    flagged = rule.flags(confidence, out["uncertainty"])
    kept = correct[~flagged]
    section["review"] = {**rule.to_dict(), split: {
        "flagged_share": float(flagged.mean()), "accuracy_all": float(correct.mean()),
        "accuracy_unflagged": float(kept.mean()) if len(kept) else None,
        "coverage": float(1.0 - flagged.mean()), "risk": float(1.0 - kept.mean()) if len(kept) else None}}
    return section, rule


def scores(report: dict[str, Any]) -> dict[str, float]:
    """The headline figures of an evaluation report, unprefixed, and the noisy-label AUROCs if any."""
    out = {key: float(report[key]) for key, _ in HEADLINE if report.get(key) is not None}
    noise = report.get("noise") or {}
    if noise.get("auroc") is not None:
        out["noisy_label_auroc"] = float(noise["auroc"])
    if noise.get("ambiguous_auroc") is not None:
        out["ambiguous_auroc"] = float(noise["ambiguous_auroc"])
    return out


def headline_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report as flat scalars for MLflow and the KFP Metrics artifact: `<split>_<figure>`,
    `<split>_recall_<class>`, and the noisy-label AUROCs unprefixed."""
    split = report["split"]
    flat = {(key if key.endswith("auroc") else f"{split}_{key}"): value for key, value in scores(report).items()}
    flat.update({f"{split}_recall_{name}": float(value)
                 for name, value in report["per_class_recall"].items() if value is not None})
    flat.update(trust_metrics(report.get("trust") or {}))
    return flat


def trust_metrics(section: dict[str, Any]) -> dict[str, float]:
    """The trust section as MLflow keys: `{split}_error_auroc_{signal}`, `{split}_aurc_{signal}`,
    `{split}_accuracy_at_90_{signal}` (and 80), `{split}_ambiguous_auroc_{signal}`, and the review rule's
    `review_threshold` with its flagged share and unflagged accuracy per split."""
    flat: dict[str, float] = {}
    for part, entry in section.items():
        if part in ("review", "note") or not isinstance(entry, dict):
            continue
        for signal in trust.SIGNALS:
            figures = entry.get(signal)
            if not figures:
                continue
            for key in ("error_auroc", "aurc", "ambiguous_auroc"):
                if figures.get(key) is not None:
                    flat[f"{part}_{key}_{signal}"] = float(figures[key])
            for coverage, value in figures["accuracy_at"].items():
                flat[f"{part}_accuracy_at_{int(round(float(coverage) * 100))}_{signal}"] = float(value)
    review = section.get("review")
    if review:
        flat["review_threshold"] = float(review["threshold"])
        applied = [("val", review["validation"])] + [(key, value) for key, value in review.items()
                                                     if key not in RULE_KEYS and isinstance(value, dict)]
        for part, figures in applied:
            flat[f"{part}_review_flagged_share"] = float(figures["flagged_share"])
            if figures.get("accuracy_unflagged") is not None:
                flat[f"{part}_review_accuracy_unflagged"] = float(figures["accuracy_unflagged"])
    return flat


RULE_KEYS = frozenset({"signal", "threshold", "target_flagged", "combination", "validation"})


def _metrics_path(run_dir: Path, split: str) -> Path:
    return run_dir / ("metrics.json" if split == "test" else f"metrics_{split}.json")


def _write_predictions(path: Path, dataset: FERDataset, out: dict[str, np.ndarray], probs: np.ndarray) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "label", "prediction", "confidence", "uncertainty"])
    predictions = probs.argmax(axis=1)
    for row, label, pred, confidence, uncertainty in zip(dataset.rows, out["labels"], predictions,
                                                         probs.max(axis=1), out["uncertainty"]):
        writer.writerow([row.path, dataset.class_names[label], dataset.class_names[pred],
                         f"{confidence:.6f}", f"{uncertainty:.6g}"])
    atomic_write_text(path, buffer.getvalue())


def evaluate_run(run_dir: str | Path, data_dir: str | Path, split: str = "test", config: Config | None = None,
                 truth_csv: str | Path | None = None) -> dict[str, Any]:
    """Evaluate RUN/best.pt on DATA's `split`; write metrics, predictions and plots; return the metrics."""
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if config is None:
        config_path = run_dir / "config.json"
        config = from_dict(read_json(config_path)) if config_path.is_file() else Config()
    model, meta = load_best_model(run_dir)
    dataset = FERDataset(data_dir, split, eval_transform(int(meta["image_size"])), num_classes=int(meta["num_classes"]))
    if list(dataset.class_names) != list(meta["class_names"]):
        raise ValueError(f"{data_dir}: classes {dataset.class_names} differ from the run's {meta['class_names']}")
    device = pick_device(config.train.device)
    out = predict(model, dataset, config.evaluate.batch_size, config.train.workers, device)
    probs = M.softmax(out["logits"])
    predictions = probs.argmax(axis=1)
    report = M.classification_report(out["labels"], predictions, probs, list(dataset.class_names),
                                     config.evaluate.ece_bins)
    report.update(
        split=split,
        run_dir=str(run_dir),
        data_dir=str(data_dir),
        best_epoch=meta.get("best_epoch"),
        uncertainty=M.uncertainty_stats(out["uncertainty"], predictions == out["labels"]),
    )
    truth_path = Path(truth_csv) if truth_csv else data_dir / TRUTH
    if truth_path.is_file():
        report["noise"] = noise_detection(model, data_dir, truth_path, int(meta["image_size"]),
                                          config.evaluate.batch_size, config.train.workers, device)
    report["trust"], rule = trust_section(model, data_dir, split, out, probs, dataset, int(meta["image_size"]), config,
                                          device, truth_path)
    if rule is not None:
        write_json(run_dir / trust.REVIEW_FILE, rule.to_dict())

    plot_dir = run_dir / "plots"
    bins = M.reliability_bins(probs, out["labels"], config.evaluate.ece_bins)
    report["plots"] = [str(path.relative_to(run_dir)) for path in (
        plots.plot_confusion_matrix(report["confusion_matrix"], dataset.class_names,
                                    plot_dir / f"{split}_confusion_matrix.png", title=f"Confusion matrix ({split})"),
        plots.plot_per_class_bars(report["per_class_recall"], plot_dir / f"{split}_per_class_recall.png",
                                  title=f"Per-class recall ({split})", reference=report["mean_class_accuracy"]),
        plots.plot_reliability(bins, plot_dir / f"{split}_reliability.png", ece=report["ece"]),
    )]
    if rule is not None:
        for part in dict.fromkeys((split, "val")):
            signals = {name: report["trust"][part][name] for name in trust.SIGNALS if name in report["trust"][part]}
            marker = ({**report["trust"]["review"][split], "signal": rule.signal} if part == split else
                      {**rule.validation, "signal": rule.signal, "coverage": 1 - rule.validation["flagged_share"],
                       "risk": None if rule.validation["accuracy_unflagged"] is None
                       else 1 - rule.validation["accuracy_unflagged"]})
            report["plots"].append(str(plots.plot_risk_coverage(
                signals, plot_dir / f"{part}_risk_coverage.png", title=f"Risk-coverage ({part})",
                review=marker).relative_to(run_dir)))
    for part in report["trust"].values():  # the curves are drawn; the report keeps their figures only
        for name in trust.SIGNALS:
            if isinstance(part, dict) and isinstance(part.get(name), dict):
                part[name].pop("curve", None)
    history_path = run_dir / "history.json"
    if history_path.is_file() and read_json(history_path):
        report["plots"].append(str(plots.plot_training_curves(read_json(history_path),
                                                              plot_dir / "training_curves.png").relative_to(run_dir)))
    _write_predictions(run_dir / f"predictions_{split}.csv", dataset, out, probs)
    report["metrics_path"] = str(_metrics_path(run_dir, split))
    report = M.nan_to_none(report)
    write_json(report["metrics_path"], report)
    # the headline figures alone (DVC's metrics file: `dvc metrics show`, one column each in `dvc exp show`)
    write_json(run_dir / ("scores.json" if split == "test" else f"scores_{split}.json"), scores(report))
    return report
