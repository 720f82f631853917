"""Nothing lost: ingest and synth replace only what they made, never their source; readers never leave
the dataset root; a killed checkpoint write is cleaned on resume. Each runs the `fer` CLI as a user
would (a subprocess) where the issue was found through it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fer_core.config import DataConfig, SynthConfig
from fer_core.data.ingest import ingest
from fer_core.data.synth import SynthError, synthesize
from fer_core.io import OutputError, atomic_write_bytes, remove_stale_temps
from tests.data.fixtures import rafdb_rows, write_rafdb

FER = str(Path(sys.executable).with_name("fer"))
SMALL = DataConfig(image_size=24, workers=1, val_fraction=0.25)


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FER, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def rafdb(tmp_path) -> Path:
    return write_rafdb(tmp_path / "raf", rafdb_rows(2, 1), size=24)


def test_ingest_into_its_own_source_is_refused_and_the_source_is_intact(rafdb):
    before = digest(rafdb)
    result = fer("data", "ingest", "--format", "rafdb", "--source", str(rafdb), "--out", str(rafdb),
                 "--set", "data.image_size=24")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "inside the source" in result.stderr
    assert digest(rafdb) == before


def test_ingest_refuses_outputs_inside_or_around_the_source(rafdb, tmp_path):
    with pytest.raises(OutputError, match="inside the source"):
        ingest("rafdb", rafdb, rafdb / "prepared", SMALL, progress=False)
    with pytest.raises(OutputError, match="would delete the source"):
        ingest("rafdb", rafdb, rafdb.parent, SMALL, progress=False)
    assert not (rafdb / "prepared").exists()


def test_ingest_keeps_a_users_folder_and_replaces_only_its_own_output(rafdb, tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.txt").write_text("three years of work")
    result = fer("data", "ingest", "--format", "rafdb", "--source", str(rafdb), "--out", str(mine),
                 "--set", "data.image_size=24")
    assert result.returncode == 2
    assert "was not made by `fer data ingest`" in result.stderr
    assert (mine / "thesis.txt").read_text() == "three years of work"

    out = tmp_path / "prepared"
    ingest("rafdb", rafdb, out, SMALL, progress=False)
    first = (out / "manifest.csv").read_text()
    ingest("rafdb", rafdb, out, SMALL, progress=False)  # its own output: replaced
    assert (out / "manifest.csv").read_text() == first


def test_synth_refuses_a_folder_it_did_not_make(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(SynthError, match="was not made by `fer data synth`"):
        synthesize(target, SynthConfig(scale=0.002, image_size=24), progress=False, workers=1)
    assert (target / "keep.txt").read_text() == "mine"
    # a dataset.json with another producer does not make it ours either
    (target / "synth.json").write_text('{"producer": "someone else"}')
    with pytest.raises(SynthError):
        synthesize(target, SynthConfig(scale=0.002, image_size=24), progress=False, workers=1)
    assert (target / "keep.txt").exists()


def test_rafdb_reader_refuses_names_that_leave_the_dataset(rafdb, tmp_path):
    secret = tmp_path / "secret_aligned.jpg"
    secret.write_bytes((rafdb / "Image" / "aligned" / "train_00001_aligned.jpg").read_bytes())
    labels = rafdb / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text() + "train_../../../secret.jpg 1\n../train_00099.jpg 2\n")
    out = tmp_path / "prepared"
    summary = ingest("rafdb", rafdb, out, SMALL, progress=False)
    manifest = (out / "manifest.csv").read_text()
    assert "secret" not in manifest
    rejected = (out / "rejected.csv").read_text()
    assert rejected.count("is a path") == 2
    assert summary["num_rejected"] == 2


def test_a_killed_checkpoint_write_is_cleaned_on_resume(tmp_path):
    target = tmp_path / "checkpoints" / "last.pt"
    atomic_write_bytes(target, b"good")
    stale = target.parent / ".last.pt.tmp-abc123"
    stale.write_bytes(b"x" * 1000)  # what a kill in the middle of atomic_write_bytes leaves
    unrelated = target.parent / "notes.txt"
    unrelated.write_text("keep")
    assert remove_stale_temps(target) == [stale]
    assert not stale.exists() and unrelated.exists() and target.read_bytes() == b"good"


@pytest.mark.parametrize("setting, message", [
    ("train.epochs=0", "train.epochs: 0 is out of range"),
    ("train.epochs=-3", "train.epochs: -3 is out of range"),
    ("train.lr=-1", "train.lr: -1.0 is out of range"),
    ("serve.inference_port=99999", "serve.inference_port: 99999 is out of range"),
    ("model.stem=huge", "model.stem: 'huge' is not one of"),
])
def test_settings_out_of_range_are_refused_by_the_cli(setting, message, tmp_path):
    result = fer("train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"), "--set", setting)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_binary_params_file_is_a_clear_error(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_bytes(os.urandom(64) + b"\xff\xfe\x00")
    result = fer("data", "weights", str(tmp_path), "--out", str(tmp_path / "w.json"), "--params", str(params))
    assert result.returncode != 0
    assert "is not a UTF-8 text YAML file" in result.stderr
    assert "Traceback" not in result.stderr
