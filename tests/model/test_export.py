"""The exported program (.pt2) equals the eager model in eval mode, for batch 1 and batch 3."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fer_core.config import ModelConfig
from fer_core.model import build_model
from fer_core.io import sha256_file
from fer_core.model.export import InferenceModel, export_model, load_exported

SIZE = 32


@pytest.fixture(scope="module")
def trained_like_model():
    """A model whose BN running stats are not the defaults (so eval vs train mode differ visibly)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model(dataclasses.replace(ModelConfig(), head_pool=2), num_classes=7).train()
    with torch.no_grad():
        for _ in range(3):
            model.predict(torch.randn(4, 3, SIZE, SIZE) * 2 + 1)
    return model


@pytest.fixture(scope="module")
def exported(trained_like_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.pt2"
    returned = export_model(trained_like_model, path, image_size=SIZE)
    assert returned == path and path.is_file()
    return load_exported(path, sha256_file(path))


@pytest.mark.parametrize("batch", [1, 3])
def test_exported_equals_eager_in_eval_mode(trained_like_model, exported, batch):
    x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
    logits, uncertainty = exported(x)
    model = trained_like_model.eval()
    with torch.no_grad():
        eager_logits, eager_uncertainty = InferenceModel(model)(x)
    model.train()
    assert logits.shape == (batch, 7) and uncertainty.shape == (batch,)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(uncertainty, eager_uncertainty, rtol=1e-4, atol=1e-5)


def test_export_freezes_eval_mode_and_leaves_the_caller_alone(trained_like_model, exported):
    assert trained_like_model.training  # export worked on a copy
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        train_mode_logits, _ = trained_like_model.predict(x)  # batch statistics + dropout
    logits, _ = exported(x)
    assert not torch.allclose(logits, train_mode_logits, atol=1e-3)
    # deterministic: dropout is off in the program
    torch.testing.assert_close(exported(x)[0], logits)


def test_exported_answers_each_sample_independently(exported):
    # BN in eval mode: a sample's output must not depend on the rest of the batch.
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(exported(x)[0][1:2], exported(x[1:2])[0], rtol=1e-4, atol=1e-5)


def test_load_exported_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt2"):
        load_exported(tmp_path / "missing.pt2", "0" * 64)
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a program")
    with pytest.raises(ValueError, match="garbage.pt2"):
        load_exported(garbage, sha256_file(garbage))
    with pytest.raises(ValueError, match="no recorded sha256"):
        load_exported(garbage)
    with pytest.raises(ValueError, match="differs from the recorded"):
        load_exported(garbage, "0" * 64)


def test_bad_image_size_is_refused(trained_like_model, tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        export_model(trained_like_model, tmp_path / "m.pt2", image_size=0)
    assert not (tmp_path / "m.pt2").exists()


def test_weights_round_trip_through_safetensors(trained_like_model, tmp_path):
    """model.safetensors + meta.json rebuild the same network (what serving and MLflow load)."""
    from fer_core.model.export import load_inference_model, write_model_files

    spec = dataclasses.asdict(dataclasses.replace(ModelConfig(), head_pool=2))
    meta = write_model_files(trained_like_model.eval(), tmp_path, {"num_classes": 7, "model": spec}, SIZE,
                             program=False)
    trained_like_model.train()
    assert set(meta["files"]) == {"weights"} and not (tmp_path / "model.pt2").exists()
    loaded = load_inference_model(tmp_path / "model.safetensors", meta)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = InferenceModel(trained_like_model.eval())(x)
    trained_like_model.train()
    torch.testing.assert_close(loaded(x)[0], expected[0])
    # another network shape in meta: refused by name, never a silent partial load
    with pytest.raises(ValueError, match="do not fit"):
        load_inference_model(tmp_path / "model.safetensors", {**meta, "model": {**spec, "head_pool": 1}})
