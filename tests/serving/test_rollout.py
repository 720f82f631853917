"""The cluster deploy path: a rolling restart of the TorchServe Deployment (no cluster here, so the
Kubernetes API object is a recording stand-in; the patch body is what `kubectl rollout restart` sends)."""

from __future__ import annotations

import datetime as dt

import pytest

from fer_core.serving.rollout import RESTARTED_AT, restart_patch, rollout_restart


class _Apps:
    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = [], fail

    def patch_namespaced_deployment(self, name, namespace, body):
        if self.fail:
            raise ConnectionError("connection refused")
        self.calls.append((name, namespace, body))


def test_restart_patch_is_kubectls_annotation():
    body = restart_patch(dt.datetime(2026, 11, 29, 9, 30, tzinfo=dt.timezone.utc))
    assert body == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-11-29T09:30:00Z"}}}}}


def test_rollout_restart_patches_the_named_deployment():
    apps = _Apps()
    stamp = rollout_restart("fer", "torchserve", api=apps)
    ((name, namespace, body),) = apps.calls
    assert (name, namespace) == ("torchserve", "fer")
    assert body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == stamp


def test_a_failed_restart_names_the_deployment():
    with pytest.raises(RuntimeError, match="deployment/torchserve in namespace fer"):
        rollout_restart("fer", "torchserve", api=_Apps(fail=True))
