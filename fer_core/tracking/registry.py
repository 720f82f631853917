"""The Model Registry's quality gate: every new version gets alias `candidate`; alias `champion` moves
only to a version that meets the floor and beats the current champion on the gate metric.

The decision is recorded on the version (tags gate.passed, gate.promoted, gate.reason, gate.metric,
gate.value, gate.previous_champion, fer.run_id, and its description), so `rollback_champion` can put
the previous champion back and anyone reading the registry sees why a version is or is not serving.
Promotion converges: the champion is recomputed as the best gated version and set only while it is
still better (`converge_champion`), so concurrent or retried gates cannot crown a worse model.
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


RUN_TAG = "fer.run_id"        # the training run a version was registered from (one version per run)
CONVERGE_ROUNDS = 8            # alias writes re-checked this many times at most before giving up


def find_version_for_run(model_name: str, run_id: str):
    """The version registered from training run `run_id` (tag fer.run_id), or None."""
    try:
        versions = client().search_model_versions(f"name='{model_name}'")
    except MlflowException:
        return None
    found = [v for v in versions if (v.tags or {}).get(RUN_TAG) == run_id]
    return min(found, key=lambda v: int(v.version)) if found else None


def _eligible(version) -> float | None:
    """A version's gated value when it may be champion: passed its floor, not rolled back."""
    tags = version.tags or {}
    if tags.get("gate.passed") != "true" or tags.get("gate.rolled_back") == "true":
        return None
    try:
        return float(tags["gate.value"])
    except (KeyError, ValueError):
        return None


def _retrying(write, *args, attempts: int = 5) -> None:
    """An idempotent registry write, retried: two gates writing the same tag at once can make the
    store's upsert fail (sqlite: UNIQUE constraint) although the value would be the same."""
    import time

    for attempt in range(attempts):
        try:
            write(*args)
            return
        except MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


MANUAL_TAG = "gate.manual_since"  # registered-model tag: versions up to it lost to a manual choice


def _manual_since(model_name: str) -> int:
    """The highest version number that existed when the champion was last set by hand (0 if never)."""
    try:
        tags = client().get_registered_model(model_name).tags or {}
    except MlflowException:
        return 0
    try:
        return int(tags.get(MANUAL_TAG, 0))
    except ValueError:
        return 0


def _mark_manual(model_name: str) -> None:
    """A manual champion choice (set_champion, rollback_champion) holds against every version that
    exists now: only versions registered after it compete with it at the next gate."""
    versions = client().search_model_versions(f"name='{model_name}'")
    highest = max((int(v.version) for v in versions), default=0)
    client().set_registered_model_tag(model_name, MANUAL_TAG, str(highest))


def _best_gated(model_name: str, metric_name: str):
    """(version, value) of the best version that passed its gate on `metric_name` and was registered
    after the last manual champion choice; ties go to the oldest version (a tie never moves the
    champion). None when no version qualifies."""
    best = None
    since = _manual_since(model_name)
    for version in client().search_model_versions(f"name='{model_name}'"):
        if (version.tags or {}).get("gate.metric") != metric_name or int(version.version) <= since:
            continue
        value = _eligible(version)
        if value is None:
            continue
        key = (value, -int(version.version))
        if best is None or key > best[0]:
            best = (key, version)
    return (best[1], best[0][0]) if best else None


def converge_champion(model_name: str, metric_name: str) -> tuple[str | None, str | None, float | None]:
    """Point `champion` at the best gated version when it beats the current champion; re-read after
    every write and repeat, so concurrent gates end on the same, best, champion whatever the order of
    their writes. Returns (champion now, champion before, its value)."""
    mlflow_client = client()
    first_previous, first_value = None, None
    for round_index in range(CONVERGE_ROUNDS):
        champion = _alias_version(model_name, CHAMPION)
        previous = str(champion.version) if champion is not None else None
        previous_value = version_metric(model_name, previous, metric_name) if previous is not None else None
        if previous is not None and previous_value is None:
            raise ValueError(f"champion {model_name} v{previous} has no recorded {metric_name}; the gate cannot "
                             f"compare against it (tag it gate.value or pick one with set_champion)")
        if round_index == 0:
            first_previous, first_value = previous, previous_value
        best = _best_gated(model_name, metric_name)
        if best is None or (previous is not None and best[1] <= previous_value):
            return previous, first_previous, first_value
        if str(best[0].version) == previous:
            return previous, first_previous, first_value
        # the crowned version records what it replaces before the alias moves (rollback reads it)
        crowned = str(best[0].version)
        _retrying(mlflow_client.set_model_version_tag, model_name, crowned, "gate.promoted", "true")
        _retrying(mlflow_client.set_model_version_tag, model_name, crowned, "gate.previous_champion", previous or "")
        _retrying(mlflow_client.set_registered_model_alias, model_name, CHAMPION, crowned)
    raise RuntimeError(f"{model_name}: champion alias still moving after {CONVERGE_ROUNDS} rounds")


REGISTERED_MODEL_NOTE = (
    "Facial expression recognition (7 basic expressions, RAF-DB order: neutral, happy, sad, surprise, "
    "fear, disgust, anger). Input: float32 x[N,3,S,S] normalised as the version's meta.json says (S in "
    "the model's metadata `image_size`); output: class probabilities and a per-image uncertainty. "
    "Aliases: `candidate` = the newest version, `champion` = the best version that passed the quality "
    "gate (what TorchServe serves). Each version's description and `gate.*` tags give its gate decision.")
REGISTERED_MODEL_TAGS = {"task": "facial-expression-recognition", "framework": "pytorch",
                         "serving": "torchserve", "method": "cbam-resnet+class-weights+uncertainty-mixing"}


def _describe_registered_model(mlflow_client, model_name: str) -> None:
    """The registered model's description and tags, when it has none yet (a user's own stay).
    Documentation only: a write that loses a race with a concurrent gate is logged, never fatal."""
    import logging

    try:
        model = mlflow_client.get_registered_model(model_name)
        if not model.description:
            _retrying(lambda: mlflow_client.update_registered_model(model_name, description=REGISTERED_MODEL_NOTE))
        for key, value in REGISTERED_MODEL_TAGS.items():
            if key not in (model.tags or {}):
                _retrying(mlflow_client.set_registered_model_tag, model_name, key, value)
    except MlflowException as exc:
        logging.getLogger(__name__).warning("registered model %s: description/tags not written (%s)", model_name, exc)


def register_and_gate(model_uri: str, model_name: str, *, metric_name: str, metric_value: float,
                      floor: float, run_id: str | None = None) -> GateDecision:
    """Register `model_uri` as a new version of `model_name`, alias it `candidate`, and make it
    `champion` only if metric_value >= floor and it beats the champion's recorded metric.

    Race-free: the version's gate tags are written before any alias moves, and `converge_champion`
    sets the champion to the best gated version with re-checks, so two gates running at once (or a
    retry) end with the better model as champion. With `run_id`, the step is idempotent per training
    run: a version already registered from that run is reused, never duplicated.
    """
    import mlflow

    client()  # configure URIs for the fluent register_model
    if metric_value is None or not math.isfinite(float(metric_value)):
        raise ValueError(f"gate metric {metric_name} of {model_uri} is {metric_value!r}; a finite number is needed")
    metric_value = float(metric_value)
    mlflow_client = client()
    existing = find_version_for_run(model_name, run_id) if run_id else None
    if existing is not None:
        version = str(existing.version)
    else:
        version = str(mlflow.register_model(model_uri, model_name, tags={RUN_TAG: run_id} if run_id else None).version)
        if run_id:
            # two attempts of one run registering at the same moment: the oldest version wins and the
            # other attempt removes the version it just created (before it carries any gate tag)
            first = find_version_for_run(model_name, run_id)
            if first is not None and str(first.version) != version:
                mlflow_client.delete_model_version(model_name, version)
                version = str(first.version)

    _describe_registered_model(mlflow_client, model_name)
    passed = metric_value >= floor
    tags = {"gate.metric": metric_name, "gate.value": repr(metric_value), "gate.floor": repr(float(floor)),
            "gate.passed": str(passed).lower()}
    for key, value in tags.items():
        _retrying(mlflow_client.set_model_version_tag, model_name, version, key, value)
    _retrying(mlflow_client.set_registered_model_alias, model_name, CANDIDATE, version)

    champion, previous, previous_value = converge_champion(model_name, metric_name)
    own_tags = mlflow_client.get_model_version(model_name, version).tags or {}
    promoted = champion == version and own_tags.get("gate.promoted") == "true"
    if promoted and previous == version:  # crowned by a concurrent gate or an earlier attempt of this run
        previous = own_tags.get("gate.previous_champion") or None
        previous_value = version_metric(model_name, previous, metric_name) if previous else None
    if not passed:
        reason = f"{metric_name} {metric_value:.4f} is below the floor {floor:.4f}"
    elif promoted and previous is None:
        reason = f"first version to pass the floor ({metric_name} {metric_value:.4f} >= {floor:.4f})"
    elif promoted and previous_value is not None:
        reason = f"{metric_name} {metric_value:.4f} beats champion v{previous} ({previous_value:.4f})"
    elif champion == version:
        reason = f"champion ({metric_name} {metric_value:.4f})"
    else:
        champion_value = version_metric(model_name, champion, metric_name) if champion else None
        reason = (f"{metric_name} {metric_value:.4f} does not beat champion v{champion} ({champion_value:.4f})"
                  if champion_value is not None else f"{metric_name} {metric_value:.4f}: no champion")
    if champion != version:  # a crowned version keeps the promotion tags converge_champion wrote
        _retrying(mlflow_client.set_model_version_tag, model_name, version, "gate.promoted", "false")
    _retrying(mlflow_client.set_model_version_tag, model_name, version, "gate.reason", reason)
    verdict = "champion" if champion == version else "candidate only"
    mlflow_client.update_model_version(model_name, version, description=f"Quality gate: {verdict}. {reason}.")
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
    if (mlflow_client.get_model_version(model_name, version).tags or {}).get("gate.rolled_back"):
        mlflow_client.delete_model_version_tag(model_name, version, "gate.rolled_back")
    mlflow_client.set_model_version_tag(model_name, version, "gate.previous_champion", previous or "")
    _mark_manual(model_name)
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
    _mark_manual(model_name)
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, previous)
    return previous


def newest_version_summary(model_name: str, tracking_uri: str) -> dict:
    """The newest registered version of MODEL_NAME, its aliases, gate decision and its run's headline metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    versions = client.search_model_versions(f"name = '{model_name}'", order_by=["version_number DESC"], max_results=1)
    if not versions:
        return {"model_name": model_name, "registered_version": None}
    version = client.get_model_version(model_name, versions[0].version)  # search results carry no aliases
    run = client.get_run(version.run_id)
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION).version
    except MlflowException:  # no champion yet
        champion = None
    return {"model_name": model_name, "registered_version": version.version, "champion_version": champion,
            "aliases": list(version.aliases), "gate": version.tags.get("gate.reason", ""),
            "mlflow_run_id": version.run_id,
            "metrics": {key: round(value, 4) for key, value in sorted(run.data.metrics.items())
                        if key.startswith(("best_val_", "test_", "noisy")) and "_recall_" not in key},
            "tracking_uri": tracking_uri}
