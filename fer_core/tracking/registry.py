"""The Model Registry's quality gate: every new version gets alias `candidate`; alias `champion` moves
only to a version that meets the floor and beats the current champion on the gate metric.

The decision is recorded on the version (tags gate.promoted, gate.reason, gate.metric, gate.value,
gate.previous_champion, and its description), so `rollback_champion` can put the previous champion
back and anyone reading the registry sees why a version is or is not serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from fer_core.tracking.runs import client

CANDIDATE = "candidate"
CHAMPION = "champion"


@dataclass(frozen=True)
class GateDecision:
    name: str
    version: str
    promoted: bool
    reason: str
    previous_champion: str | None
    previous_value: float | None


def _alias_version(model_name: str, alias: str):
    try:
        return client().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def version_metric(model_name: str, version: str, metric_name: str) -> float | None:
    """The gate metric of a version: its gate.value tag (what it was gated on), else its run's
    best_<metric>, else the run's last <metric>; None when none is known."""
    mlflow_client = client()
    model_version = mlflow_client.get_model_version(model_name, version)
    tags = model_version.tags or {}
    if tags.get("gate.metric") == metric_name and tags.get("gate.value") not in (None, ""):
        return float(tags["gate.value"])
    if model_version.run_id:
        try:
            metrics = mlflow_client.get_run(model_version.run_id).data.metrics
        except MlflowException:
            return None
        for key in (f"best_{metric_name}", metric_name):
            if key in metrics:
                return float(metrics[key])
    return None


def register_and_gate(model_uri: str, model_name: str, *, metric_name: str, metric_value: float,
                      floor: float) -> GateDecision:
    """Register `model_uri` as a new version of `model_name`, alias it `candidate`, and make it
    `champion` only if metric_value >= floor and (no champion yet or metric_value > the champion's)."""
    import mlflow

    client()  # configure URIs for the fluent register_model
    if metric_value is None or not math.isfinite(float(metric_value)):
        raise ValueError(f"gate metric {metric_name} of {model_uri} is {metric_value!r}; a finite number is needed")
    metric_value = float(metric_value)
    registered = mlflow.register_model(model_uri, model_name)
    version = str(registered.version)
    mlflow_client = client()
    mlflow_client.set_registered_model_alias(model_name, CANDIDATE, version)

    champion = _alias_version(model_name, CHAMPION)
    previous = str(champion.version) if champion is not None else None
    previous_value = version_metric(model_name, previous, metric_name) if previous is not None else None
    if metric_value < floor:
        promoted = False
        reason = f"{metric_name} {metric_value:.4f} is below the floor {floor:.4f}"
    elif previous is None:
        promoted = True
        reason = f"first version to pass the floor ({metric_name} {metric_value:.4f} >= {floor:.4f})"
    elif previous_value is None:
        promoted = True
        reason = f"champion v{previous} has no recorded {metric_name}; {metric_value:.4f} >= floor {floor:.4f}"
    elif metric_value > previous_value:
        promoted = True
        reason = f"{metric_name} {metric_value:.4f} beats champion v{previous} ({previous_value:.4f})"
    else:
        promoted = False
        reason = f"{metric_name} {metric_value:.4f} does not beat champion v{previous} ({previous_value:.4f})"

    tags = {"gate.metric": metric_name, "gate.value": repr(metric_value), "gate.floor": repr(float(floor)),
            "gate.promoted": str(promoted).lower(), "gate.reason": reason,
            "gate.previous_champion": previous or ""}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(model_name, version, key, value)
    verdict = "champion" if promoted else "candidate only"
    mlflow_client.update_model_version(model_name, version, description=f"Quality gate: {verdict}. {reason}.")
    if promoted:
        mlflow_client.set_registered_model_alias(model_name, CHAMPION, version)
    return GateDecision(name=model_name, version=version, promoted=promoted, reason=reason,
                        previous_champion=previous, previous_value=previous_value)


def set_alias(model_name: str, alias: str, version: str | int) -> None:
    client().set_registered_model_alias(model_name, alias, str(version))


def set_champion(model_name: str, version: str | int, *, reason: str = "set by hand") -> str | None:
    """Make `version` the champion (a manual promotion, bypassing the gate); returns the previous
    champion's version. Recorded on the version as gate.manual."""
    mlflow_client = client()
    version = str(version)
    mlflow_client.get_model_version(model_name, version)  # a clear error if it does not exist
    champion = _alias_version(model_name, CHAMPION)
    previous = str(champion.version) if champion is not None else None
    if previous == version:
        return previous
    mlflow_client.set_model_version_tag(model_name, version, "gate.manual", reason)
    mlflow_client.set_model_version_tag(model_name, version, "gate.previous_champion", previous or "")
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, version)
    return previous


def rollback_champion(model_name: str) -> str:
    """Point `champion` back at the version it replaced (the champion's gate.previous_champion tag);
    returns the version now serving. Raises ValueError when there is nothing to roll back to."""
    mlflow_client = client()
    champion = _alias_version(model_name, CHAMPION)
    if champion is None:
        raise ValueError(f"registered model {model_name!r} has no champion to roll back")
    previous = (champion.tags or {}).get("gate.previous_champion", "")
    if not previous:
        raise ValueError(f"{model_name} v{champion.version} replaced no earlier champion; "
                         f"pick one with set_champion({model_name!r}, VERSION)")
    mlflow_client.set_model_version_tag(model_name, str(champion.version), "gate.rolled_back", "true")
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, previous)
    return previous
