"""The training engine: a run's files, exact resume after a kill, refusing a mismatched resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fer_core.config import from_dict
from fer_core.data.dataset import FERDataset
from fer_core.data.transforms import IMAGENET_MEAN, eval_transform
from fer_core.model import build_model
from fer_core.model.export import load_exported, load_inference_model
from fer_core.training.engine import train
from fer_core.training.resume import ResumeError
from tests.training.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


class Recorder:
    """A callback that records events and can kill the run after a given step."""

    def __init__(self, kill_after_step: int | None = None) -> None:
        self.events: list[tuple] = []
        self.kill_after_step = kill_after_step

    def on_train_start(self, context):
        self.events.append(("start", context.start_epoch, context.resumed))

    def on_step_end(self, step, metrics):
        self.events.append(("step", step))
        if self.kill_after_step is not None and step == self.kill_after_step:
            raise KeyboardInterrupt(f"killed after step {step}")

    def on_epoch_end(self, epoch, metrics):
        self.events.append(("epoch", epoch, metrics["val_mean_class_accuracy"]))

    def on_checkpoint(self, path):
        self.events.append(("checkpoint", Path(path).name))

    def on_train_end(self, result):
        self.events.append(("end", result.best_epoch))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def untimed(history):
    """A run's epoch history without the wall-clock seconds (the only field two identical runs differ in)."""
    return [{k: v for k, v in entry.items() if k != "epoch_seconds"} for entry in history]


def test_a_run_writes_every_file_of_the_contract(tiny_data, tmp_path):
    run = tmp_path / "run"
    recorder = Recorder()
    config = tiny_config()
    result = train(config, tiny_data, run, callbacks=[recorder])

    for name in ("config.json", "meta.json", "history.json", "weights.json", "best.pt", "model.safetensors", "model.pt2",
                 "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert from_dict(json.loads((run / "config.json").read_text())) == config
    history = json.loads((run / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "val_mean_class_accuracy", "lr_fc"} <= set(history[0])
    # ExponentialLR: the fc group's lr decays by gamma per epoch
    assert history[1]["lr_fc"] == pytest.approx(history[0]["lr_fc"] * config.train.lr_gamma)

    meta = json.loads((run / "meta.json").read_text())
    assert meta["class_names"][:2] == ["neutral", "happy"] and meta["image_size"] == 32
    assert meta["mean"] == list(IMAGENET_MEAN) and meta["model"]["arch"] == "resnet18"
    best_epoch = max(history, key=lambda e: e["val_mean_class_accuracy"])["epoch"]
    assert meta["best_epoch"] == result.best_epoch == best_epoch
    assert meta["val_metrics"]["val_mean_class_accuracy"] == pytest.approx(
        history[best_epoch - 1]["val_mean_class_accuracy"])

    weights = json.loads((run / "weights.json").read_text())
    counts, values = weights["counts"], weights["weights"]
    assert sum(counts[c] * values[c] for c in counts) / sum(counts.values()) == pytest.approx(1.0)

    # best.pt holds plain data and state_dicts; the exported program gives the same answers
    best = _load(run / "best.pt")
    model = build_model(config.model, 7)
    model.load_state_dict(best["state_dict"])
    model.eval()
    test_set = FERDataset(tiny_data, "test", eval_transform(32))
    images = torch.stack([test_set[i][0] for i in range(3)])
    logits, uncertainty = load_exported(run / "model.pt2", meta["files"]["program"]["sha256"])(images)
    expected_logits, expected_uncertainty = model.predict(images)
    served_logits, _ = load_inference_model(run / "model.safetensors", meta)(images)
    assert torch.allclose(served_logits, expected_logits, atol=1e-5)
    assert torch.allclose(logits, expected_logits, atol=1e-4)
    assert torch.allclose(uncertainty, expected_uncertainty, rtol=1e-4)

    kinds = [event[0] for event in recorder.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    assert kinds.count("checkpoint") == 2  # checkpoint_every_steps=0: once per epoch


def test_resume_after_a_kill_gives_bit_identical_weights(tiny_data, tmp_path):
    # 28 train images, batch 8 -> 4 steps/epoch; checkpoints every 3 steps and at each epoch end; the
    # host reads the figures every step, so the callback sees (and kills at) step 7
    config = tiny_config(**{"train.checkpoint_every_steps": 3, "train.sync_every_steps": 1})
    whole = train(config, tiny_data, tmp_path / "whole", export=False)

    killed = tmp_path / "killed"
    # step 7 is batch 3 of epoch 2; the last checkpoint (step 6 = batch 2 of epoch 2) is one step behind
    with pytest.raises(KeyboardInterrupt):
        train(config, tiny_data, killed, callbacks=[Recorder(kill_after_step=7)], export=False)
    partial = _load(killed / "checkpoints" / "last.pt")
    assert (partial["epoch"], partial["batch"], partial["global_step"]) == (1, 2, 6)

    # resume with two DataLoader workers: augmentation is seeded per sample, so workers do not matter
    recorder = Recorder()
    resumed = train(config.override({"train.workers": 2}), tiny_data, killed, callbacks=[recorder], export=False)
    assert recorder.events[0] == ("start", 1, True)
    assert [e for e in recorder.events if e[0] == "step"][0] == ("step", 7)

    for name in ("checkpoints/last.pt", "best.pt"):
        a = _load(tmp_path / "whole" / name)
        b = _load(killed / name)
        key = "model" if name.startswith("checkpoints") else "state_dict"
        assert a[key].keys() == b[key].keys()
        for param in a[key]:
            assert torch.equal(a[key][param], b[key][param]), f"{name}: {param} differs"
    a, b = _load(tmp_path / "whole" / "checkpoints" / "last.pt"), _load(killed / "checkpoints" / "last.pt")
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])
    assert untimed(resumed.history) == untimed(whole.history)

    # and a different seed really gives different weights (the equality above is not vacuous)
    other = train(config.override({"train.seed": 1, "train.epochs": 1}), tiny_data, tmp_path / "other", export=False)
    assert other.history[0]["train_loss"] != whole.history[0]["train_loss"]


def test_resume_refuses_changed_model_settings(tiny_data, tmp_path):
    config = tiny_config(**{"train.epochs": 1, "train.max_steps_per_epoch": 1})
    train(config, tiny_data, tmp_path / "run", export=False)
    with pytest.raises(ResumeError, match=r"model.cbam: True -> False"):
        train(config.override({"model.cbam": False}), tiny_data, tmp_path / "run", export=False)
    # more epochs is allowed: the run continues from epoch 2
    recorder = Recorder()
    result = train(config.override({"train.epochs": 2}), tiny_data, tmp_path / "run", callbacks=[recorder],
                   export=False)
    assert recorder.events[0] == ("start", 1, True)
    assert result.epochs_completed == 2 and len(result.history) == 2


def test_early_stopping_and_step_cap(tiny_data, tmp_path):
    config = tiny_config(**{"train.epochs": 6, "train.max_steps_per_epoch": 1, "train.early_stopping_patience": 1,
                            "train.lr": 0.0, "train.lr_fc": 0.0})  # lr 0: val never improves after epoch 1
    recorder = Recorder()
    result = train(config, tiny_data, tmp_path / "run", callbacks=[recorder], export=False)
    # lr 0 still moves BatchNorm statistics, so val may improve once or twice; patience 1 stops one
    # epoch after the last improvement, well before the 6 epochs
    assert result.stopped_early and result.epochs_completed == result.best_epoch + 1 < 6
    steps = [e for e in recorder.events if e[0] == "step"]
    assert steps == [("step", n) for n in range(1, result.epochs_completed + 1)]  # 1 step per epoch


def test_dataset_with_wrong_class_count_is_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="data.num_classes=7"):
        train(tiny_config(**{"data.num_classes": 8}), tiny_data, tmp_path / "run", export=False)


def _engine_command(data, run, config, *extra):
    command = [sys.executable, *extra, "-m", "fer_core.training.torchrun", "--data", str(data), "--out", str(run),
               "--no-export"]
    for key, value in config.flat().items():
        if key.startswith(("train.", "model.", "evaluate.")):
            command += ["--set", f"{key}={value}"]
    return command


@pytest.mark.slow
def test_resume_after_sigkill_of_a_real_process(tiny_data, tmp_path):
    """SIGKILL (no chance to clean up) right after epoch 1; the resumed run equals an uninterrupted one."""
    config = tiny_config(**{"train.checkpoint_every_steps": 1})
    whole = train(config, tiny_data, tmp_path / "whole", export=False)
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(_engine_command(tiny_data, run, config), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "history.json").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    partial = _load(run / "checkpoints" / "last.pt")
    # killed while (or just after) writing the epoch-1 checkpoint: the last complete one is step 3 or 4
    assert not partial["finished"] and 3 <= partial["global_step"] < 8

    resumed = train(config, tiny_data, run, export=False)
    a, b = _load(tmp_path / "whole" / "best.pt"), _load(run / "best.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert [e["val_loss"] for e in resumed.history] == [e["val_loss"] for e in whole.history]


@pytest.mark.slow
def test_ddp_two_cpu_processes_train(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    command = _engine_command(tiny_data, run, tiny_config(), "-m", "torch.distributed.run", "--standalone",
                              "--nproc-per-node", "2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "best epoch" in done.stdout

    checkpoint = _load(run / "checkpoints" / "last.pt")
    assert len(checkpoint["rank_state"]) == 2  # each rank's RNG was saved for an exact resume
    assert not torch.equal(checkpoint["rank_state"][0]["rng"]["mix"], checkpoint["rank_state"][1]["rng"]["mix"])
    # 28 images over 2 ranks at batch 8: 14 per rank -> 2 steps per epoch, 2 epochs
    assert checkpoint["global_step"] == 4 and checkpoint["epoch"] == 2
    history = json.loads((run / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]
    best = history[checkpoint["best_epoch"] - 1]
    assert checkpoint["best_metric"] == best["val_mean_class_accuracy"] == max(e["val_mean_class_accuracy"] for e in history)
    # every optimiser step of the run reached the saved state: 2 steps per epoch per rank, in lockstep
    assert {int(state["step"]) for state in checkpoint["optimizer"]["state"].values()} == {4}


def test_the_class_weights_file_is_what_the_loss_uses(tiny_data, tmp_path):
    """The pipeline's class-weights artifact (or `fer train --weights`) drives the loss: other weights,
    other training loss; a file for other classes or with a bad weight is refused by name."""
    from fer_core.labels import CLASS_NAMES_7

    config = tiny_config(**{"train.epochs": 1, "train.max_steps_per_epoch": 2})
    losses = {}
    for name, fear in (("flat", 1.0), ("fear-heavy", 40.0)):
        weights = {c: (fear if c == "fear" else 1.0) for c in CLASS_NAMES_7}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"scheme": "custom", "weights": weights}))
        train(config, tiny_data, tmp_path / name, export=False, weights_file=path)
        losses[name] = json.loads((tmp_path / name / "history.json").read_text())[0]["train_loss"]
        recorded = json.loads((tmp_path / name / "weights.json").read_text())
        assert recorded["weights"] == weights and recorded["source"] == str(path)
    assert losses["flat"] != pytest.approx(losses["fear-heavy"], rel=1e-3)
    # the same flat weights computed by the config (weights.scheme none) give the same loss as the file
    train(config.override({"weights.scheme": "none"}), tiny_data, tmp_path / "none", export=False)
    assert json.loads((tmp_path / "none" / "history.json").read_text())[0]["train_loss"] == pytest.approx(losses["flat"])

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": {**{c: 1.0 for c in CLASS_NAMES_7[:6]}, "contempt": 1.0}}))
    with pytest.raises(ValueError, match=r"bad.json: its classes do not match.*missing \['anger'\].*unknown \['contempt'\]"):
        train(config, tiny_data, tmp_path / "bad", export=False, weights_file=bad)
    bad.write_text(json.dumps({"weights": {**{c: 1.0 for c in CLASS_NAMES_7}, "fear": -2}}))
    with pytest.raises(ValueError, match="weight of 'fear' is -2"):
        train(config, tiny_data, tmp_path / "bad", export=False, weights_file=bad)


def test_a_weights_file_from_other_data_and_a_resume_with_other_weights_are_refused(tiny_data, tmp_path):
    from fer_core.labels import CLASS_NAMES_7
    from fer_core.training.resume import ResumeError

    config = tiny_config(**{"train.epochs": 1, "train.max_steps_per_epoch": 1})
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"weights": {c: 1.0 for c in CLASS_NAMES_7}, "counts": {c: 999 for c in CLASS_NAMES_7}}))
    with pytest.raises(ValueError, match="other.json: made from other data"):
        train(config, tiny_data, tmp_path / "a", export=False, weights_file=other)
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"weights": {c: 1.0 for c in CLASS_NAMES_7}}))
    train(config, tiny_data, tmp_path / "run", export=False, weights_file=flat)
    heavy = tmp_path / "heavy.json"
    heavy.write_text(json.dumps({"weights": {c: (5.0 if c == "fear" else 1.0) for c in CLASS_NAMES_7}}))
    with pytest.raises(ResumeError, match="class weights"):
        train(config.override({"train.epochs": 2}), tiny_data, tmp_path / "run", export=False, weights_file=heavy)


def test_run_state_selects_the_best_epoch_and_stops_after_patience():
    from fer_core.training.resume import RunState

    state = RunState()
    scores = [0.3, 0.5, 0.4, 0.45]
    improved = [state.end_epoch({"epoch": i + 1, "val_mean_class_accuracy": value, "train_loss": 1.0},
                                "val_mean_class_accuracy", patience=2, epochs=10) for i, value in enumerate(scores)]
    assert improved == [True, True, False, False]
    assert (state.best_epoch, state.best_metric, state.best_metrics) == (2, 0.5, {"val_mean_class_accuracy": 0.5})
    assert state.stopped_early and state.finished and state.epoch == 4 and state.batch == 0
    restored = RunState()
    restored.restore(state.saved())
    assert restored.saved() == state.saved() and "sums" not in state.saved()  # sums are saved per rank
