"""MLflow adapter: the only place that imports mlflow for tracking and the Model Registry.

    configure(uri)                  tracking + registry URI (default sqlite under FER_HOME)
    ensure_experiment(name)         experiment id (artifacts under FER_HOME on a local store)
    MLflowCallback(run_id)          the training engine's events -> params, tags, metrics, artifacts
    log_run_context(run_id)         git commit + package versions as tags
    log_data_version(run_id, DATA)  manifest.csv as the run's training dataset input; returns its sha256
    log_artifacts_dir(run_id, PATH) a report / plots / metrics.json as artifacts
    log_fer_model(run_id, RUN)      RUN/model.safetensors + meta.json as a pyfunc model; returns its URI
    register_and_gate(URI, NAME, metric_name=, metric_value=, floor=, run_id=) -> GateDecision
    converge_champion(NAME, METRIC) champion := best gated version (race-free, re-checked)
    set_champion / rollback_champion / set_alias
"""

from fer_core.tracking.callback import MLflowCallback
from fer_core.tracking.model import log_fer_model
from fer_core.tracking.registry import (CANDIDATE, CHAMPION, GateDecision, converge_champion, find_version_for_run,
                                        register_and_gate, rollback_champion, set_alias, set_champion,
                                        version_metric)
from fer_core.tracking.runs import (client, configure, ensure_experiment, log_artifacts_dir, log_data_version,
                                    log_run_context, package_versions)

__all__ = [
    "CANDIDATE", "CHAMPION", "GateDecision", "MLflowCallback", "client", "configure", "ensure_experiment",
    "log_artifacts_dir", "log_data_version", "log_fer_model", "log_run_context", "package_versions",
    "converge_champion", "find_version_for_run", "register_and_gate", "rollback_champion", "set_alias",
    "set_champion", "version_metric",
]
