"""The repo's dvc.yaml, run for real: `dvc repro` in a tmp git + DVC repo runs every stage on a tiny
synthetic RAF-DB, and a second `dvc repro` finds everything up to date."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fer_core.versioning import init_repo
from tests.docs import doc_block
from tests.versioning.conftest import make_git_repo

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "validate", "class_weights", "train", "evaluate")
# the smallest profile that still goes through every real step
TINY = {
    "data": {"image_size": 32, "workers": 1},
    "train": {"epochs": 1, "image_size": 32, "batch_size": 8, "max_steps_per_epoch": 2, "workers": 0,
              "device": "cpu", "checkpoint_every_steps": 0, "cache_images_mb": 0},
    "model": {"head_pool": 1},
    "evaluate": {"batch_size": 64},
}


def _dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's fer and dvc
    env.pop("FER_PARAMS", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false")
    return env


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, env=_dvc_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_is_up_to_date(tmp_path):
    repo = make_git_repo(tmp_path / "project")
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert tuple(pipeline["stages"]) == STAGES
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    for stage in pipeline["stages"].values():  # the code each stage names as a dependency
        for dep in stage["deps"]:
            if dep.startswith("fer_core/"):
                (repo / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / dep, repo / dep)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_repo(repo, remote_url=str(tmp_path / "remote"))
    subprocess.run([str(Path(sys.executable).parent / "fer"), "data", "synth", "--out", "data/raw", "--scale", "0.01",
                    "--image-size", "32", "--workers", "1"], cwd=repo, env=_dvc_env(), check=True,
                   capture_output=True)

    first = _dvc(repo, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout
    for path in ("data/prepared/manifest.csv", "reports/validation/report.json", "reports/class_weights.json",
                 "runs/train/model.safetensors", "runs/train/model.pt2", "runs/train/metrics.json", "runs/train/plots/test_confusion_matrix.png"):
        assert (repo / path).is_file(), path
    assert (repo / "dvc.lock").is_file()
    weights = json.loads((repo / "reports/class_weights.json").read_text())
    train_weights = json.loads((repo / "runs/train/weights.json").read_text())
    assert weights["weights"] == train_weights["weights"]  # `fer data weights` agrees with training
    assert train_weights["source"] == "reports/class_weights.json"  # ... because training reads that file

    second = _dvc(repo, "repro")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout

    metrics = _dvc(repo, "metrics", "show", "--json")
    assert metrics.returncode == 0 and "mean_class_accuracy" in metrics.stdout
    # the metrics are the headline figures, not every number of every report (once 215 columns)
    shown = json.loads(metrics.stdout)
    files = {name: data for workspace in shown.values() for name, data in workspace["data"].items()}
    assert set(files) == {"runs/train/scores.json"}, set(files)
    assert {"accuracy", "mean_class_accuracy", "macro_f1", "ece"} <= set(files["runs/train/scores.json"]["data"])
    assert len(files["runs/train/scores.json"]["data"]) <= 8
    # each plot is drawn once: history.json by DVC, each PNG once (the page once showed every PNG twice)
    plots = _dvc(repo, "plots", "show", "-o", "plots_html")
    assert plots.returncode == 0, plots.stderr
    page = (repo / "plots_html" / "index.html").read_text(encoding="utf-8")
    drawn = list((repo / "runs/train/plots").glob("*.png")) + list((repo / "reports").glob("*.png"))
    # the confusion matrix, per-class recall, reliability, the risk-coverage curves of test and val, the
    # training curves, the class weights and the class distribution
    assert page.count("<img") == len(drawn) == 8, page.count("<img")


@pytest.mark.slow
def test_the_documented_first_look_runs_as_written_in_a_clone(tmp_path):
    """docs/data-versioning.md's `dvc exp run` block, line for line, in a git clone of this repo whose
    .venv is this test's environment: every stage runs and the metrics, plots and experiment table show."""
    block = doc_block("docs/data-versioning.md", re.escape("## 3. `dvc repro`"), gap=".*?")
    assert "dvc exp run" in block and "dvc metrics show" in block
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {key: value for key, value in _dvc_env().items() if key not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
    env.update(COLUMNS="200", FER_HOME=str(tmp_path / "home"))
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout, stage
    assert "runs/train/scores.json" in result.stdout and "mean_class_accuracy" in result.stdout  # metrics show
    assert (clone / "dvc_plots" / "index.html").is_file()                                        # plots show
    table = result.stdout.split("dvc_plots", 1)[1]                                               # exp show
    assert "train.max_steps_per_epoch" in table and "fer_core/" not in table
    assert (clone / "params.yaml").read_bytes() == (ROOT / "params.yaml").read_bytes()   # the checkout
