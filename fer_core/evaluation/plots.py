"""PNG plots of an evaluation and of a training history (matplotlib, Agg backend, no display needed).

Each function draws on its own Figure object (not pyplot's global state), so plots made in threads or
in a long-lived process never bleed into each other, and returns the path it wrote.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fer_core.io import atomic_write_bytes


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # lazy: importing this module does no work

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_confusion_matrix(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Row-normalised colours (recall per true class) with the raw counts written in each cell."""
    counts = np.asarray(confusion, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = max(4.0, 0.7 * len(class_names) + 2)
    figure = _figure(size + 1, size)
    axes = figure.add_subplot()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for row in range(counts.shape[0]):
        for col in range(counts.shape[1]):
            colour = "white" if normalised[row, col] > 0.5 else "black"
            axes.text(col, row, f"{int(counts[row, col])}", ha="center", va="center", color=colour, fontsize=8)
    return _save(figure, path)


def plot_per_class_bars(values: dict[str, float | None], path: str | Path, ylabel: str = "recall",
                        title: str = "Per-class recall", reference: float | None = None,
                        reference_label: str | None = None) -> Path:
    """One bar per class (None/NaN drawn as an empty slot), optionally a dashed reference line."""
    names = list(values)
    heights = [v if v is not None and not math.isnan(v) else 0.0 for v in values.values()]
    figure = _figure(max(5.0, 0.8 * len(names) + 2), 4)
    axes = figure.add_subplot()
    bars = axes.bar(names, heights, color="tab:blue")
    axes.bar_label(bars, labels=[f"{h:.2f}" for h in heights], fontsize=8)
    if reference is not None and not math.isnan(reference):
        # named in the title, not a legend: a legend box would sit on some class's bar
        axes.axhline(reference, linestyle="--", color="tab:red")
        title = f"{title} (dashed: {reference_label or f'mean {reference:.3f}'})"
    # room for every bar and its value label (class weights go well above 1)
    axes.set_ylim(0, max([1.0, *heights]) * 1.12)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.tick_params(axis="x", rotation=45)
    return _save(figure, path)


def plot_reliability(bins: dict[str, Any], path: str | Path, ece: float | None = None) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration."""
    edges = np.asarray(bins["edges"], dtype=float)
    accuracy = np.nan_to_num(np.asarray(bins["accuracy"], dtype=float))
    count = np.asarray(bins["count"], dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    figure = _figure(5, 5)
    axes = figure.add_subplot()
    axes.bar(centres, accuracy, width=width * 0.95, color="tab:blue", edgecolor="black", label="accuracy")
    axes.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    twin = axes.twinx()
    counts_line, = twin.plot(centres, count, color="tab:orange", marker=".", label="samples per bin")
    twin.set_ylabel("samples per bin")
    twin.set_ylim(0, max(1.0, float(count.max()) if count.size else 1.0) * 2.2)  # the line keeps to the lower half
    axes.set_zorder(twin.get_zorder() + 1)  # bars drawn over the count line
    axes.patch.set_visible(False)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (max probability)")
    axes.set_ylabel("accuracy")
    title = "Reliability diagram" + (f" (ECE {ece:.3f})" if ece is not None and not math.isnan(ece) else "")
    axes.set_title(title)
    handles, labels = axes.get_legend_handles_labels()
    axes.legend(handles + [counts_line], labels + [counts_line.get_label()], loc="upper left")
    return _save(figure, path)


def plot_risk_coverage(signals: dict[str, dict[str, Any]], path: str | Path, title: str = "Risk-coverage",
                       review: dict[str, Any] | None = None) -> Path:
    """One risk-coverage curve per trust signal (fer_core.evaluation.trust): the error rate of the answers
    kept when only the most trusted share (coverage) is accepted, with each curve's AURC in the legend;
    `review` (the served rule, applied to these answers) marks its operating point."""
    figure = _figure(6, 4.5)
    axes = figure.add_subplot()
    for name, entry in signals.items():
        curve = entry["curve"]
        axes.plot(curve["coverage"], curve["risk"], label=f"{name} (AURC {entry['aurc']:.3f})")
    if review and review.get("coverage") is not None and review.get("risk") is not None:
        axes.scatter([review["coverage"]], [review["risk"]], color="black", zorder=3,
                     label=f"review rule ({review['signal']}): {review['flagged_share']:.0%} flagged")
    axes.set_xlim(0, 1)
    axes.set_ylim(bottom=0)
    axes.set_xlabel("coverage (share of answers accepted, most trusted first)")
    axes.set_ylabel("risk (error rate of the accepted answers)")
    axes.set_title(title)
    axes.legend(loc="upper left")
    return _save(figure, path)


def plot_class_distribution(counts: dict[str, dict[str, int]], path: str | Path,
                            title: str = "Images per class and split") -> Path:
    """Grouped bars: for each class, its image count in each split (train, val, test), labelled."""
    splits = [s for s in ("train", "val", "test") if s in counts] + sorted(set(counts) - {"train", "val", "test"})
    names = list(next(iter(counts.values()))) if counts else []
    figure = _figure(max(6.0, 1.1 * len(names) + 2), 4.5)
    axes = figure.add_subplot()
    width = 0.8 / max(len(splits), 1)
    positions = np.arange(len(names))
    top = 1
    for i, split in enumerate(splits):
        heights = [counts[split].get(name, 0) for name in names]
        top = max(top, *heights) if heights else top
        bars = axes.bar(positions + (i - (len(splits) - 1) / 2) * width, heights, width, label=f"{split} "
                        f"({sum(heights)})")
        axes.bar_label(bars, fontsize=7, rotation=90, padding=2)
    axes.set_xticks(positions, names, rotation=45)
    axes.set_ylim(0, top * 1.25)
    axes.set_ylabel("images")
    axes.set_title(title)
    axes.legend(loc="upper right")
    return _save(figure, path)


def plot_training_curves(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train vs validation, from RUN/history.json."""
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = [entry["epoch"] for entry in history]
    figure = _figure(10, 4)
    loss_axes, acc_axes = figure.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        if key in history[0]:
            loss_axes.plot(epochs, [entry.get(key) for entry in history], marker="o", label=label)
    loss_axes.set_title("loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.legend()
    for key, label in (("train_accuracy", "train accuracy"), ("val_accuracy", "val accuracy"),
                       ("val_mean_class_accuracy", "val mean class accuracy")):
        if key in history[0]:
            acc_axes.plot(epochs, [entry.get(key) for entry in history], marker="o", label=label)
    acc_axes.set_title("accuracy")
    acc_axes.set_xlabel("epoch")
    acc_axes.set_ylim(0, 1)
    acc_axes.legend()
    return _save(figure, path)
