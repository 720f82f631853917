"""The run-time glue the component bodies share: the step's Config from the sections it was given,
endpoints from parameters, the console line, and the artifact pages (Markdown, HTML). No kfp import
here: inside a running component KFP's executor exposes only its run-time part of `kfp.dsl` (the
decorators are in components/base.py, used when the pipeline is defined).

KFP ships each component function's source alone, so what a body needs beyond its own lines is
imported from here inside the body; the image installs `components` beside `fer_core` (pyproject.toml).
fer_core never imports this module: the library knows nothing of Kubeflow.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path
from typing import Any

REPORT = "[fer] "


def step_config(**sections: dict):
    """The `fer_core.config.Config` a step runs with, from the config sections the pipeline passed it
    (`data=data_config, ...`; the rest keep their defaults and are not read by that step). Each
    component gets only the sections it reads, so a change to another section (say `train.lr`) leaves
    its cached result valid; the values are range-checked as any config is."""
    from fer_core.config import from_dict

    return from_dict(sections)


def announce(text: str) -> None:
    """A line for people from inside a component: a local run's console (fer_cli/console.py) shows
    it beside the task's duration; on a cluster it is an ordinary log line."""
    print(f"{REPORT}{text}", flush=True)


def use_endpoints(*, s3_endpoint_url: str = "", mlflow_tracking_uri: str = "") -> None:
    """Pipeline parameters win over the pod's environment; empty means keep the environment's."""
    if s3_endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint_url
    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from fer_core.home import quiet_third_parties

    quiet_third_parties()
    # The KFP executor logs at INFO; Great Expectations would print hundreds of lines there.
    for name in ("great_expectations", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ingest_markdown(result: dict[str, Any]) -> str:
    version = result.get("data_version", {})
    lines = ["# Ingest", "", f"- images: {result['num_images']}", f"- rejected: {result['num_rejected']}",
             f"- source: `{version.get('source', '')}`", f"- manifest sha256: `{version.get('manifest_sha256', '')}`"]
    if version.get("dvc_rev"):
        lines.append(f"- DVC revision: `{version['dvc_rev']}` (md5 `{version.get('dvc_md5', '')}`)")
    counts = result.get("counts") or {}
    if counts:
        lines += ["", "| split | images |", "|---|---|"]
        for split, per_class in counts.items():
            total = sum(per_class.values()) if isinstance(per_class, dict) else per_class
            lines.append(f"| {split} | {total} |")
    return "\n".join(lines) + "\n"


PLOT_CAPTIONS = {"confusion_matrix": "Confusion matrix: rows are true classes, columns predictions",
                 "per_class_recall": "Recall of each class (the dashed line is their mean, the gate's metric)",
                 "reliability": "Calibration: accuracy per confidence bin against the diagonal",
                 "training_curves": "Loss and accuracy per epoch, train and validation",
                 "risk_coverage": "Which answers to trust: error rate of the answers kept, most trusted first, "
                                  "per signal (learned uncertainty, softmax confidence); the dot is the served review rule"}
PAGE_STYLE = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}"
              "h1{font-size:22px;margin-bottom:4px}.meta{color:#555;font-size:13px;margin-bottom:16px}"
              "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:4px 10px;"
              "text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
              "figure{display:inline-block;margin:0 16px 20px 0;vertical-align:top}"
              "figure img{max-width:520px;border:1px solid #eee}figcaption{font-size:13px;color:#444;max-width:520px}")


def _caption(relative: str) -> str:
    stem = Path(relative).stem
    for key, text in PLOT_CAPTIONS.items():
        if stem.endswith(key):
            split = stem[: -len(key)].rstrip("_")
            return f"{text}" + (f" ({split} split)" if split else "")
    return stem.replace("_", " ")


def plots_html(run_dir: str | Path, metrics: dict[str, Any], run_id: str = "") -> str:
    """One self-contained, styled page: which run and data, the headline metrics, the per-class
    figures, and every plot inlined as PNG with a caption saying what it shows."""
    run_dir = Path(run_dir)
    esc = html.escape
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    facts = [f"MLflow run <code>{esc(run_id)}</code>" if run_id else "",
             f"best epoch {esc(str(metrics.get('best_epoch')))}" if metrics.get("best_epoch") is not None else "",
             f"{esc(str(metrics.get('num_samples', '')))} images" if metrics.get("num_samples") else "",
             f"input {esc(str(meta.get('image_size')))} px" if meta.get("image_size") else ""]
    from fer_core.evaluation.evaluate import HEADLINE

    rows = "".join(f"<tr><td>{esc(label)}</td><td>{metrics[key]:.4f}</td></tr>"
                   for key, label in HEADLINE if isinstance(metrics.get(key), (int, float)))
    per_class = ""
    recall = metrics.get("per_class_recall") or {}
    if recall:
        support = metrics.get("per_class_support") or {}
        precision = metrics.get("per_class_precision") or {}
        order = [name for name in meta.get("class_names", []) if name in recall] or list(recall)
        cells = "".join(
            f"<tr><td>{esc(name)}</td><td>{support.get(name, '')}</td>"
            f"<td>{'' if precision.get(name) is None else f'{precision[name]:.3f}'}</td>"
            f"<td>{'' if recall[name] is None else f'{recall[name]:.3f}'}</td></tr>" for name in order)
        per_class = ("<table><tr><th>class</th><th>images</th><th>precision</th><th>recall</th></tr>"
                     f"{cells}</table>")
    images = []
    for relative in metrics.get("plots", []):
        data = base64.b64encode((run_dir / relative).read_bytes()).decode("ascii")
        images.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{esc(_caption(relative))}\"/>"
                      f"<figcaption>{esc(_caption(relative))}</figcaption></figure>")
    split = esc(str(metrics.get("split", "")))
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Evaluation ({split})</title>"
            f"<style>{PAGE_STYLE}</style></head><body><h1>Evaluation on the {split} split</h1>"
            f"<div class=\"meta\">{' · '.join(f for f in facts if f)}</div>"
            f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>{per_class}"
            f"{''.join(images)}</body></html>")


def review_summary(review: dict[str, str]) -> str:
    """One line on the served review rule from the version's review tags ('' without a rule)."""
    if not review:
        return ""
    text = (f"review rule: {review['review_signal']} above {float(review['review_threshold']):.4g} "
            f"(target {float(review['review_target_flagged']):.0%} flagged")
    if "review_val_flagged_share" in review and "review_val_accuracy_unflagged" in review:
        text += (f"; on validation {float(review['review_val_flagged_share']):.1%} flagged, accuracy of the rest "
                 f"{float(review['review_val_accuracy_unflagged']):.3f} vs {float(review['review_val_accuracy_all']):.3f}")
    return text + ")"


def decision_markdown(result: dict[str, Any]) -> str:
    promoted = "promoted to **champion**" if result["promoted"] else "kept as **candidate**"
    review = review_summary(result.get("review") or {})
    return (f"# Registry\n\n`{result['name']}` version {result['version']}: {promoted}.\n\n"
            f"- gate: {result['metric']} = {result['value']:.4f}\n- reason: {result['reason']}\n"
            + (f"- {review}\n" if review else "")
            + f"- model: `{result['model_uri']}` (MLflow run `{result['run_id']}`)\n")

