"""Rendering of the kustomize targets, shared by the k8s tests (offline: kubectl kustomize only)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
TARGETS = ("base", "overlays/local", "overlays/gpu", "overlays/istio")  # what gets applied
SECRETS = "secrets"                                     # templates, applied by hand
KUBECTL = shutil.which("kubectl")

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: cannot render k8s/")


@functools.lru_cache(maxsize=None)
def _render(target: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run([KUBECTL, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize k8s/{target} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(target: str) -> list[dict[str, Any]]:
    """The rendered objects of k8s/<target> (cached: every test reads the same render)."""
    return list(_render(target))


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(label, pod spec) of every pod template in an object: workloads, Jobs and PyTorchJob replicas."""
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield f"{obj['kind']}/{obj['metadata']['name']}", spec["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield f"CronJob/{obj['metadata']['name']}", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] == "PyTorchJob":
        for role, replica in spec["pytorchReplicaSpecs"].items():
            yield f"PyTorchJob/{obj['metadata']['name']}/{role}", replica["template"]["spec"]


def containers(pod: dict) -> Iterator[tuple[str, dict]]:
    for kind in ("initContainers", "containers"):
        for container in pod.get(kind, []):
            yield kind, container
