"""Evaluation of a trained run (metrics.json, predictions, plots, noisy-label AUROC) and the CLI bodies."""

from __future__ import annotations

import csv
import math
import json

import pytest
import torch
from click.testing import CliRunner

from fer_cli.main import cli
from fer_core.evaluation.evaluate import evaluate_run
from fer_core.training.engine import train
from tests.training.conftest import make_prepared_dataset, tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """A 2-epoch run on a dataset whose train split has 6 flipped labels and a synth_truth.csv."""
    torch.set_num_threads(1)
    data = make_prepared_dataset(tmp_path_factory.mktemp("noisy_data"), flip_train=6)
    run = tmp_path_factory.mktemp("noisy_run")
    train(tiny_config(), data, run, export=False)
    return data, run


def test_evaluate_writes_metrics_predictions_and_plots(noisy_run):
    data, run = noisy_run
    metrics = evaluate_run(run, data)
    assert json.loads((run / "metrics.json").read_text()) == metrics
    confusion = metrics["confusion_matrix"]
    assert sum(map(sum, confusion)) == metrics["num_samples"] == 7
    assert metrics["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(7)) / 7)
    assert set(metrics["per_class_recall"]) == {"neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"}
    for key in ("mean_class_accuracy", "macro_f1", "ece", "per_class_precision", "per_class_f1"):
        assert key in metrics
    stats = metrics["uncertainty"]
    assert stats["count_correct"] + stats["count_wrong"] == 7 and stats["mean"] > 0

    with open(run / "predictions_test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7
    assert metrics["accuracy"] == pytest.approx(sum(r["label"] == r["prediction"] for r in rows) / 7)
    # ECE recomputed by hand from the written confidences: 15 equal-width bins (lo, hi], |accuracy - confidence|
    # weighted by the bin's share of the images
    bins: dict[int, list[tuple[float, bool]]] = {}
    for r in rows:
        confidence = float(r["confidence"])
        bins.setdefault(min(max(math.ceil(confidence * 15) - 1, 0), 14), []).append((confidence, r["label"] == r["prediction"]))
    ece = sum(len(members) / 7 * abs(sum(ok for _, ok in members) / len(members) -
                                     sum(c for c, _ in members) / len(members)) for members in bins.values())
    assert metrics["ece"] == pytest.approx(ece, abs=1e-5)

    noise = metrics["noise"]
    assert noise["num_flipped"] == 6 and noise["num_matched"] == 28
    # the AUROC is the one of the model's train-split uncertainties against the truth file's flips,
    # recomputed here from the model, the truth file and sklearn
    from sklearn.metrics import roc_auc_score

    from fer_core.data.dataset import FERDataset
    from fer_core.data.prepared import read_truth
    from fer_core.data.transforms import eval_transform
    from fer_core.evaluation.evaluate import load_best_model

    model, meta = load_best_model(run)
    train_set = FERDataset(data, "train", eval_transform(int(meta["image_size"])))
    with torch.no_grad():
        _, uncertainty = model.predict(torch.stack([train_set[i][0] for i in range(len(train_set))]))
    truth = read_truth(data / "synth_truth.csv")
    flags = [truth[row.source_id].flipped for row in train_set.rows]
    assert noise["auroc"] == pytest.approx(roc_auc_score(flags, uncertainty.numpy()), abs=1e-6)

    # which answers to trust: the test split's error AUROC of the softmax confidence, recomputed from the
    # written predictions; the review rule chosen on validation is written beside the model
    wrong = [r["label"] != r["prediction"] for r in rows]
    trust = metrics["trust"]
    if any(wrong) and not all(wrong):
        assert trust["test"]["confidence"]["error_auroc"] == pytest.approx(
            roc_auc_score(wrong, [1 - float(r["confidence"]) for r in rows]), abs=1e-4)
    if "review" in trust:
        rule = json.loads((run / "review.json").read_text())
        assert rule["signal"] == trust["review"]["signal"] and rule["threshold"] == trust["review"]["threshold"]
        assert len(metrics["plots"]) == 6  # + the risk-coverage curves of test and val
    else:
        assert not (run / "review.json").exists() and "note" in trust
        assert len(metrics["plots"]) == 4
    for relative in metrics["plots"]:
        assert (run / relative).read_bytes()[:8] == PNG_MAGIC, relative


def test_evaluating_another_split_keeps_metrics_json(noisy_run):
    data, run = noisy_run
    metrics = evaluate_run(run, data, split="val")
    assert metrics["split"] == "val" and (run / "metrics_val.json").is_file()
    assert (run / "plots" / "val_confusion_matrix.png").is_file()


def test_cli_train_then_evaluate(tiny_data, tmp_path):
    run = tmp_path / "run"
    sets = [arg for key, value in tiny_config(**{"train.epochs": 1}).flat().items()
            if key.startswith(("train.", "model.", "evaluate.")) for arg in ("--set", f"{key}={value}")]
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", *sets])
    assert trained.exit_code == 0, trained.output
    assert "val_mean_class_accuracy" in trained.output and (run / "model.pt2").is_file()
    evaluated = runner.invoke(cli, ["evaluate", "--run", str(run), "--data", str(tiny_data), *sets])
    assert evaluated.exit_code == 0, evaluated.output
    assert "mean_class_accuracy" in evaluated.output and "per-class recall" in evaluated.output
    assert (run / "metrics.json").is_file()


def test_cli_evaluate_without_a_run_says_so(tiny_data, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(tmp_path / "nothing"), "--data", str(tiny_data)])
    assert result.exit_code == 1
    assert "best.pt not found" in result.output


def test_truth_file_matches_source_ids_with_or_without_extension(tmp_path):
    from fer_core.data.prepared import read_truth

    path = tmp_path / "synth_truth.csv"
    path.write_text("name,split,label,clean_label,flipped,intensity\n"
                    "train_00001.jpg,train,1,2,1,0.5\ntrain_00002.jpg,train,3,3,0,0.5\n")
    truth = read_truth(path)
    assert truth["train_00001.jpg"].flipped is True and truth["train_00001"].flipped is True  # ingest keeps the stem
    assert truth["train_00002"].flipped is False
    assert truth["train_00002"].intensity is None  # no clean_label_name column: not graded
    path.write_text("name,flipped\ntrain_00003.jpg,maybe\n")
    with pytest.raises(ValueError, match="line 2: flipped must be 0/1"):
        read_truth(path)


@pytest.mark.integration  # an MLflow store
def test_cli_train_logs_to_mlflow_when_tracking_is_on(tiny_data, tmp_path, monkeypatch):
    """`fer train` (what `dvc repro` runs) tracks like the pipeline's train step once a tracking URI is
    set: one finished run with the config as params, the data version and the run files."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    sets = [arg for key, value in tiny_config(**{"train.epochs": 1}).flat().items()
            if key.startswith(("train.", "model.", "evaluate.")) for arg in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *sets])
    assert result.exit_code == 0, result.output
    run_id = result.output.split("MLflow run ")[1].split()[0]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "1"
    assert run.data.tags["mlflow.source.name"] == "fer train"
    assert MlflowClient(uri).get_experiment(run.info.experiment_id).name == "fer"
    assert {"history.json", "meta.json", "weights.json"} <= {a.path for a in MlflowClient(uri).list_artifacts(run_id)}

    # `fer evaluate` logs to the run the training recorded, on the server it recorded, whatever the
    # environment says now
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(tmp_path / "run"), "--data", str(tiny_data), *sets])
    assert result.exit_code == 0, result.output
    assert "test_mean_class_accuracy" in MlflowClient(uri).get_run(run_id).data.metrics
    # an untracked training into the same folder forgets that run: a later evaluation does not log to it
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"),
                                      "--no-resume", *sets])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run" / "mlflow_run.json").exists()
