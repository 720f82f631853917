"""What makes training fast must not change what it computes: a torch.compile'd step agrees with the
eager one, the loop reads its figures on the host only every few steps yet sums them exactly, and a
non-finite loss still stops training with a message."""

from __future__ import annotations

import copy

import pytest
import torch

from fer_core.config import ConfigError
from fer_core.model import build_model
from fer_core.training.loop import StepSums, TrainStep, compile_model, train_one_epoch
from fer_core.training.losses import WeightedAddUpLoss
from fer_core.training.resume import RunState
from tests.training.conftest import tiny_config

CPU = torch.device("cpu")


def _step_results(model, images, targets, mixing: bool = True):
    """One mixing step's (loss, {name: grad}). (Not the parameters after Adam: its first update is
    lr * sign(grad), so a gradient at ~1e-9 flips a weight by 2 lr on rounding alone.)"""
    loss_fn = WeightedAddUpLoss(torch.tensor([1.0, 2.0, 1.0, 1.0, 3.0, 3.0, 1.5]))
    step = TrainStep(model, loss_fn, mixing)
    model.train()
    out = step(images, targets, torch.Generator().manual_seed(7))
    out["loss"].backward()
    return out["loss"].detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_a_compiled_step_agrees_with_the_eager_step(backend):
    # no dropout: inductor draws its masks from its own generator, so they could not be compared
    config = tiny_config(**{"model.stem": "small", "train.image_size": 48, "model.dropout": 0.0})
    torch.manual_seed(0)
    eager = build_model(config.model, 7)
    compiled = copy.deepcopy(eager)
    compile_model(compiled, "default", backend)
    assert list(compiled.state_dict()) == list(eager.state_dict())   # checkpoints and export unchanged
    for module in (compiled.backbone, compiled.mu_head, compiled.logvar_head):
        assert module._compiled_call_impl is not None                # compiled for real
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 48, 48, generator=generator)
    targets = torch.arange(8) % 7
    eager_loss, eager_grads = _step_results(eager, images, targets)
    compiled_loss, compiled_grads = _step_results(compiled, images, targets)
    assert torch.allclose(compiled_loss, eager_loss, rtol=1e-4, atol=1e-5), (compiled_loss, eager_loss)
    assert eager_grads.keys() == compiled_grads.keys() and len(eager_grads) > 50
    for name, grad in eager_grads.items():
        scale = grad.abs().max().clamp_min(1e-6)
        assert (compiled_grads[name] - grad).abs().max() <= 2e-3 * scale + 1e-6, name   # (a bias before BN: ~0)


def test_the_loop_sums_exactly_while_reading_the_host_every_few_steps():
    torch.manual_seed(0)
    config = tiny_config(**{"model.dropout": 0.0})           # train mode, yet deterministic
    model = build_model(config.model, 7)
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 7, (4,))) for _ in range(7)]
    loss_fn = WeightedAddUpLoss(torch.ones(7))
    step = TrainStep(model, loss_fn, False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)   # lr 0: every step sees the same weights
    state, synced_steps = RunState(), []

    def on_step(current, synced):
        synced_steps.append(synced)
        if synced:
            assert current.sums["seen"] == 4 * current.batch    # current whenever it says so

    train_one_epoch(step, model, batches, optimizer, CPU, torch.Generator(), state, on_step, progress=False,
                    sync_every=3)
    assert synced_steps == [False, False, True, False, False, True, True]   # every 3rd step and the last
    model.train()
    expected_loss, expected_correct = 0.0, 0
    with torch.no_grad():
        for images, targets in batches:                      # train mode, no mixing: what the loop computed
            logits = model.classify(model.encode(images)[0])
            expected_loss += float(loss_fn(logits, targets)) * 4
            expected_correct += int((logits.argmax(1) == targets).sum())
    assert state.sums["seen"] == 28 and state.batch == 7 and state.global_step == 7
    assert state.sums["correct"] == expected_correct
    assert state.sums["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_a_non_finite_loss_stops_training_naming_the_batches():
    sums = StepSums(CPU)
    sums.add(torch.tensor(1.0), torch.zeros(2, 7), torch.zeros(2, dtype=torch.long))
    sums.add(torch.tensor(float("nan")), torch.zeros(2, 7), torch.zeros(2, dtype=torch.long))
    state = RunState(epoch=2, batch=12)
    with pytest.raises(FloatingPointError, match=r"not finite at epoch 3, batches 11-12; lower train.lr"):
        sums.flush_into(state, 10)
    assert state.sums["seen"] == 0                            # nothing half-added


def test_speed_settings_are_range_checked():
    for key, value in (("train.data_path", "gpu"), ("train.compile_mode", "fast"), ("train.compile_backend", "tvm"),
                       ("train.sync_every_steps", 0), ("train.weight_decay", 2.0)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            tiny_config(**{key: value})


def test_the_device_data_path_trains_and_resumes_bit_identically(tiny_data, tmp_path, caplog):
    """train.data_path=device on CPU: the engine takes it (and says why), and a run killed mid-epoch
    resumes to the same weights, as the CPU path does (tests/training/test_engine.py)."""
    from fer_core.training.engine import train
    from tests.training.test_engine import Recorder, _load, untimed

    config = tiny_config(**{"train.checkpoint_every_steps": 3, "train.data_path": "device",
                            "train.sync_every_steps": 1})
    with caplog.at_level("INFO", logger="fer_core.training.engine"):
        whole = train(config, tiny_data, tmp_path / "whole", export=False)
    assert any("data path: device" in record.getMessage() and "within train.device_cache_mb" in record.getMessage()
               for record in caplog.records)
    with pytest.raises(KeyboardInterrupt):
        train(config, tiny_data, tmp_path / "killed", callbacks=[Recorder(kill_after_step=7)], export=False)
    resumed = train(config, tiny_data, tmp_path / "killed", export=False)
    a, b = _load(tmp_path / "whole" / "best.pt"), _load(tmp_path / "killed" / "best.pt")
    assert all(torch.equal(a["state_dict"][key], b["state_dict"][key]) for key in a["state_dict"])
    assert untimed(resumed.history) == untimed(whole.history)
    cpu = train(config.override({"train.data_path": "cpu", "train.epochs": 1}), tiny_data, tmp_path / "cpu",
                export=False)
    assert cpu.history[0]["train_loss"] != whole.history[0]["train_loss"]   # another path, other draws


def test_checkpoints_between_host_reads_resume_bit_identically(tiny_data, tmp_path):
    """Host reads every 5 steps, checkpoints every 3 (4 steps an epoch, 3 epochs): the loop also reads
    at each checkpoint step, so the checkpoint at step 9 carries current sums; killed at step 10 (a
    read), the run resumes from it to the same weights and history as a run never killed."""
    from fer_core.training.engine import train
    from tests.training.test_engine import Recorder, _load, untimed

    config = tiny_config(**{"train.checkpoint_every_steps": 3, "train.sync_every_steps": 5, "train.epochs": 3})
    whole = Recorder()
    uninterrupted = train(config, tiny_data, tmp_path / "whole", callbacks=[whole], export=False)
    assert [e[1] for e in whole.events if e[0] == "step"] == [3, 4, 5, 6, 8, 9, 10, 12]
    with pytest.raises(KeyboardInterrupt):
        train(config, tiny_data, tmp_path / "killed", callbacks=[Recorder(kill_after_step=10)], export=False)
    partial = _load(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert (partial["epoch"], partial["batch"], partial["global_step"]) == (2, 1, 9)
    resumed = train(config, tiny_data, tmp_path / "killed", export=False)
    a, b = _load(tmp_path / "whole" / "best.pt"), _load(tmp_path / "killed" / "best.pt")
    assert all(torch.equal(a["state_dict"][key], b["state_dict"][key]) for key in a["state_dict"])
    assert untimed(resumed.history) == untimed(uninterrupted.history)


def test_auto_keeps_the_cpu_path_without_cuda_and_device_insists_within_its_budget(tiny_data):
    from fer_core.data.dataset import FERDataset
    from fer_core.training.engine import choose_data_path

    train_set, val_set = FERDataset(tiny_data, "train"), FERDataset(tiny_data, "val")
    auto = tiny_config().train
    assert choose_data_path(auto, CPU, train_set, val_set)[0] == "cpu"
    assert choose_data_path(auto, torch.device("cuda"), train_set, val_set)[0] == "device"   # decided, not run
    small = tiny_config(**{"train.device_cache_mb": 0}).train
    path, reason = choose_data_path(small, torch.device("cuda"), train_set, val_set)
    assert path == "cpu" and "over train.device_cache_mb" in reason
    with pytest.raises(ValueError, match="train.data_path is device, but .* over train.device_cache_mb"):
        choose_data_path(tiny_config(**{"train.data_path": "device", "train.device_cache_mb": 0}).train, CPU,
                         train_set, val_set)
