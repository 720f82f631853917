"""Roll the cluster's TorchServe Deployment onto a new model store content, without downtime.

In the cluster each TorchServe pod copies every `.mar` from the model-store bucket when it starts
(k8s/base/torchserve.yaml), so the deploy step publishes the archive and then asks Kubernetes for a
rolling restart (what `kubectl rollout restart` does: a new pod-template annotation). The Deployment's
rolling-update strategy and readiness probe keep serving pods up throughout. The pipeline's service
account may get and patch exactly this Deployment (k8s/base/rbac.yaml).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def restart_patch(now: dt.datetime | None = None) -> dict[str, Any]:
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def rollout_restart(namespace: str, deployment: str, *, api: Any = None) -> str:
    """Patch DEPLOYMENT in NAMESPACE for a rolling restart; returns the restart stamp.

    `api` is an `AppsV1Api`; by default one from the pod's service account (in-cluster config),
    falling back to ~/.kube/config when run from a workstation.
    """
    if api is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.AppsV1Api()
    body = restart_patch()
    try:
        api.patch_namespaced_deployment(name=deployment, namespace=namespace, body=body)
    except Exception as exc:  # ApiException and connection errors: name what failed
        raise RuntimeError(f"rolling restart of deployment/{deployment} in namespace {namespace} failed: {exc}") from exc
    return body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
