"""Classification metrics in plain numpy (no torch, no sklearn), so they are easy to check by hand.

A class with no true samples has recall NaN (undefined, not 0) and is left out of mean class
accuracy; a class never predicted has precision NaN. JSON output turns NaN into null
(`nan_to_none`), since JSON has no NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _as_labels(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """[K,K] counts; row = true class, column = predicted class."""
    true, pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.size} vs {pred.size}")
    for name, array in (("y_true", true), ("y_pred", pred)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(f"{name} has a class index outside 0..{num_classes - 1}")
    return np.bincount(true * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else math.nan


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    return _safe_divide(np.diag(confusion).astype(float), confusion.sum(axis=1).astype(float))


def per_class_precision(confusion: np.ndarray) -> np.ndarray:
    return _safe_divide(np.diag(confusion).astype(float), confusion.sum(axis=0).astype(float))


def per_class_f1(confusion: np.ndarray) -> np.ndarray:
    """2TP / (2TP + FP + FN): defined (0) even when precision is undefined, NaN only for an absent class."""
    tp = np.diag(confusion).astype(float)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    return _safe_divide(2 * tp, denominator.astype(float))


def mean_class_accuracy(confusion: np.ndarray) -> float:
    """Balanced accuracy: the mean recall over the classes present in y_true."""
    recall = per_class_recall(confusion)
    present = ~np.isnan(recall)
    return float(recall[present].mean()) if present.any() else math.nan


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over classes that occur (in truth or prediction); sklearn's macro average."""
    f1 = per_class_f1(confusion)
    present = ~np.isnan(f1)
    return float(f1[present].mean()) if present.any() else math.nan


def softmax(logits: Any) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def reliability_bins(probs: Any, y_true: Any, num_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin (lo, hi]: count, mean confidence, accuracy (NaN when empty)."""
    probs = np.asarray(probs, dtype=np.float64)
    true = _as_labels(y_true, "y_true")
    if probs.ndim != 2 or probs.shape[0] != true.size:
        raise ValueError(f"probs must be [N,K] with N = len(y_true) = {true.size}, got {probs.shape}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == true).astype(float)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # (lo, hi]: a confidence of exactly 1.0 lands in the last bin, 0 never occurs for a max prob
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins).astype(float)
    conf_sum = np.bincount(index, weights=confidence, minlength=num_bins)
    correct_sum = np.bincount(index, weights=correct, minlength=num_bins)
    return {
        "edges": edges,
        "count": count,
        "confidence": _safe_divide(conf_sum, count),
        "accuracy": _safe_divide(correct_sum, count),
    }


def expected_calibration_error(probs: Any, y_true: Any, num_bins: int = 15) -> float:
    """ECE = sum_b (n_b / N) |acc_b - conf_b| over equal-width confidence bins (Guo et al. 2017)."""
    bins = reliability_bins(probs, y_true, num_bins)
    total = bins["count"].sum()
    if not total:
        return math.nan
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((bins["count"][filled] / total * gaps).sum())


def uncertainty_stats(uncertainty: Any, correct: Any) -> dict[str, float]:
    """Mean/median uncertainty of correct vs wrong predictions (a useful uncertainty is higher when wrong)."""
    values = np.asarray(uncertainty, dtype=np.float64)
    mask = np.asarray(correct, dtype=bool)
    if values.shape != mask.shape:
        raise ValueError(f"uncertainty and correct differ in shape: {values.shape} vs {mask.shape}")

    def stat(fn, part: np.ndarray) -> float:
        return float(fn(part)) if part.size else math.nan

    return {
        "mean": stat(np.mean, values),
        "median": stat(np.median, values),
        "mean_correct": stat(np.mean, values[mask]),
        "median_correct": stat(np.median, values[mask]),
        "mean_wrong": stat(np.mean, values[~mask]),
        "median_wrong": stat(np.median, values[~mask]),
        "count_correct": float(mask.sum()),
        "count_wrong": float((~mask).sum()),
    }


def classification_report(y_true: Any, y_pred: Any, probs: Any, class_names: list[str],
                          num_bins: int = 15) -> dict[str, Any]:
    """Everything metrics.json holds about predictions (NaNs kept; see nan_to_none)."""
    num_classes = len(class_names)
    confusion = confusion_matrix(y_true, y_pred, num_classes)
    by_name = lambda values: {name: float(v) for name, v in zip(class_names, values)}  # noqa: E731
    return {
        "num_samples": int(confusion.sum()),
        "accuracy": accuracy(confusion),
        "mean_class_accuracy": mean_class_accuracy(confusion),
        "macro_f1": macro_f1(confusion),
        "per_class_recall": by_name(per_class_recall(confusion)),
        "per_class_precision": by_name(per_class_precision(confusion)),
        "per_class_f1": by_name(per_class_f1(confusion)),
        "per_class_support": {name: int(n) for name, n in zip(class_names, confusion.sum(axis=1))},
        "confusion_matrix": confusion.tolist(),
        "ece": expected_calibration_error(probs, y_true, num_bins),
    }


def nan_to_none(value: Any) -> Any:
    """Recursively replace float NaN/inf with None so the result is strict JSON."""
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
