"""Small helpers the Kubeflow components share: endpoints from parameters, artifact pages, the token.

Kept in fer_core (not components/) because KFP ships each component function's source alone: what a
body needs beyond its own lines must be importable from the image.
"""

from __future__ import annotations

import base64
import html
import logging
import os
from pathlib import Path
from typing import Any


REPORT = "[fer] "


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


def plots_html(run_dir: str | Path, metrics: dict[str, Any]) -> str:
    """One self-contained page: the headline metrics and every plot inlined as PNG."""
    run_dir = Path(run_dir)
    rows = "".join(f"<tr><td>{html.escape(key)}</td><td>{metrics[key]:.4f}</td></tr>"
                   for key in ("accuracy", "mean_class_accuracy", "macro_f1", "ece")
                   if isinstance(metrics.get(key), (int, float)))
    images = []
    for relative in metrics.get("plots", []):
        data = base64.b64encode((run_dir / relative).read_bytes()).decode("ascii")
        images.append(f"<figure><img src=\"data:image/png;base64,{data}\"/><figcaption>"
                      f"{html.escape(relative)}</figcaption></figure>")
    return (f"<html><head><meta charset=\"utf-8\"><title>Evaluation</title></head><body>"
            f"<h1>Evaluation on {html.escape(str(metrics.get('split', '')))}</h1><table>{rows}</table>"
            f"{''.join(images)}</body></html>")


def decision_markdown(result: dict[str, Any]) -> str:
    promoted = "promoted to **champion**" if result["promoted"] else "kept as **candidate**"
    return (f"# Registry\n\n`{result['name']}` version {result['version']}: {promoted}.\n\n"
            f"- gate: {result['metric']} = {result['value']:.4f}\n- reason: {result['reason']}\n"
            f"- model: `{result['model_uri']}` (MLflow run `{result['run_id']}`)\n")

