"""Backbone weight loading: torchvision keys map onto the trunk, the rest is reported, garbage raises."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torchvision

from fer_core.config import ModelConfig
from fer_core.model import build_model
from fer_core.model.weights import WeightLoadError, load_backbone_weights


def small_model(**changes):
    return build_model(dataclasses.replace(ModelConfig(), head_pool=1, **changes), num_classes=7)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()  # random init: nothing downloaded
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_torchvision_resnet18_loads_every_backbone_key(torchvision_file, caplog):
    path, state = torchvision_file
    model = small_model()
    with caplog.at_level(logging.INFO, logger="fer_core.model.weights"):
        report = load_backbone_weights(model, str(path), key_map="torchvision")
    trunk_keys = [k for k in state if not k.startswith("fc.")]
    assert sorted(report.loaded) == sorted("backbone." + k for k in trunk_keys)
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]  # ImageNet's classifier, never ours
    assert report.shape_mismatch == []
    # missing: exactly the heads, our fc and the CBAM modules (torchvision has no CBAM)
    assert {k.split(".")[0] for k in report.missing} == {"mu_head", "logvar_head", "fc", "backbone"}
    assert all(".cbam." in k for k in report.missing if k.startswith("backbone."))
    assert "mu_head.linear.weight" in report.missing and "logvar_head.bn_out.weight" in report.missing
    own = model.state_dict()
    for key in trunk_keys:
        torch.testing.assert_close(own["backbone." + key], state[key])
    assert "loaded 120 tensors" in report.summary()
    assert "loaded 120 tensors" in caplog.text  # the report is logged, not only returned


def test_without_cbam_only_the_heads_are_missing(torchvision_file):
    path, _ = torchvision_file
    report = load_backbone_weights(small_model(cbam=False), f"file://{path}", key_map="torchvision")
    assert {k.split(".")[0] for k in report.missing} == {"mu_head", "logvar_head", "fc"}


def test_checkpoint_wrappers_and_ddp_prefix_are_unwrapped(torchvision_file, tmp_path):
    _, state = torchvision_file
    wrapped = tmp_path / "msceleb_like.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, wrapped)
    report = load_backbone_weights(small_model(), str(wrapped), key_map="torchvision")
    assert len(report.loaded) == 120


def test_identity_map_restores_our_own_model(tmp_path):
    torch.manual_seed(1)
    source = small_model()
    path = tmp_path / "best.pt"
    torch.save({"state_dict": source.state_dict(), "meta": {"epoch": 1}}, path)
    target = small_model()
    report = load_backbone_weights(target, str(path))
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_shape_mismatch_is_reported_not_loaded(tmp_path):
    source = build_model(dataclasses.replace(ModelConfig(), head_pool=1), num_classes=8)
    path = tmp_path / "eight.pt"
    torch.save(source.state_dict(), path)
    target = small_model()
    before = target.fc.weight.clone()
    report = load_backbone_weights(target, str(path))
    assert [k for k, _, _ in report.shape_mismatch] == ["fc.weight", "fc.bias"]
    assert report.shape_mismatch[0][1:] == ((8, 64), (7, 64))
    torch.testing.assert_close(target.fc.weight, before)


def test_garbage_state_dict_raises(tmp_path):
    path = tmp_path / "garbage.pt"
    torch.save({"foo.weight": torch.zeros(3), "bar": torch.ones(2, 2)}, path)
    with pytest.raises(WeightLoadError, match="no tensor of .*garbage.pt matches"):
        load_backbone_weights(small_model(), str(path), key_map="torchvision")


def test_torchvision_file_without_key_map_raises(torchvision_file):
    path, _ = torchvision_file
    with pytest.raises(WeightLoadError, match="pretrained_key_map"):
        load_backbone_weights(small_model(), str(path))


@pytest.mark.parametrize("content, message", [
    (b"not a torch file", "not a loadable weights file"),
])
def test_unreadable_file_raises(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(WeightLoadError, match=message):
        load_backbone_weights(small_model(), str(path))


def test_missing_file_and_unknown_map(tmp_path, torchvision_file):
    with pytest.raises(WeightLoadError, match="not found"):
        load_backbone_weights(small_model(), str(tmp_path / "nope.pt"))
    with pytest.raises(WeightLoadError, match="unknown model.pretrained_key_map 'timm'"):
        load_backbone_weights(small_model(), str(torchvision_file[0]), key_map="timm")


def test_loads_from_s3(s3_env, torchvision_file, monkeypatch):
    """An s3:// source goes through MLflow's artifact download against a real (moto) S3 endpoint."""
    import boto3

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_env)
    path, _ = torchvision_file
    client = boto3.client("s3", endpoint_url=s3_env)
    client.create_bucket(Bucket="weights")
    client.upload_file(str(path), "weights", "backbones/resnet18.pth")
    report = load_backbone_weights(small_model(), "s3://weights/backbones/resnet18.pth", key_map="torchvision")
    assert len(report.loaded) == 120
    with pytest.raises(WeightLoadError, match="could not fetch weights from s3://weights/none.pth"):
        load_backbone_weights(small_model(), "s3://weights/none.pth", key_map="torchvision")


def test_loads_from_an_mlflow_run(tmp_path, torchvision_file, monkeypatch):
    """runs:/<id>/<path> resolves through a real MLflow tracking store (sqlite, local artifacts)."""
    import mlflow

    path, _ = torchvision_file
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("weights", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifact(str(path), artifact_path="backbone")
        report = load_backbone_weights(small_model(), f"runs:/{run.info.run_id}/backbone/resnet18.pth",
                                       key_map="torchvision")
        assert len(report.loaded) == 120
        # a folder with exactly one weights file is accepted too
        report = load_backbone_weights(small_model(), f"runs:/{run.info.run_id}/backbone", key_map="torchvision")
        assert len(report.loaded) == 120
    finally:
        mlflow.set_tracking_uri(None)
