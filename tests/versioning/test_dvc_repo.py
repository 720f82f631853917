"""add_and_push -> git clone -> fetch_dataset at a rev gives the same bytes (local and S3 remotes)."""

from __future__ import annotations

import shutil
import subprocess

import boto3
import pytest

from fer_core.versioning import (DatasetNotFoundError, add_and_push, dataset_version, fetch_dataset, file_sha256,
                                 init_repo)
from tests.versioning.conftest import git, tree_bytes, write_dataset


def _round_trip(repo, tmp_path):
    data = write_dataset(repo / "data" / "prepared", version=1)
    first_bytes = tree_bytes(data)
    first = add_and_push(repo, "data/prepared", message="data v1")
    assert first.path == "data/prepared" and first.md5.endswith(".dir")
    assert first.rev == git(repo, "rev-parse", "HEAD")
    assert git(repo, "status", "--porcelain") == ""  # .dvc + .gitignore committed

    shutil.rmtree(data)
    second_data = write_dataset(repo / "data" / "prepared", version=2)
    second_bytes = tree_bytes(second_data)
    second = add_and_push(repo, "data/prepared", message="data v2")
    assert second.rev != first.rev and second.md5 != first.md5

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    assert not (clone / ".dvc" / "cache").exists()  # a fresh clone: everything comes from the remote

    got_first = fetch_dataset(clone, "data/prepared", first.rev, tmp_path / "out1")
    assert tree_bytes(tmp_path / "out1") == first_bytes
    assert (got_first.rev, got_first.md5) == (first.rev, first.md5)
    got_second = fetch_dataset(clone, "data/prepared", second.rev, tmp_path / "out2")
    assert tree_bytes(tmp_path / "out2") == second_bytes
    assert got_second.md5 == second.md5
    return first, second


def test_local_remote_round_trip(git_repo, tmp_path, fer_home):
    init_repo(git_repo)  # default remote: $FER_HOME/dvc-remote
    first, _ = _round_trip(git_repo, tmp_path)
    assert first.remote == str((fer_home / "dvc-remote").resolve())
    assert any((fer_home / "dvc-remote").rglob("*"))


def test_s3_remote_round_trip(git_repo, tmp_path, s3_env):
    boto3.client("s3").create_bucket(Bucket="fer-data")
    init_repo(git_repo, remote_url="s3://fer-data/dvc")
    config = (git_repo / ".dvc" / "config").read_text()
    assert f"endpointurl = {s3_env}" in config and "testing" not in config  # no credentials in the file
    first, _ = _round_trip(git_repo, tmp_path)
    assert first.remote == "s3://fer-data/dvc"
    keys = [item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket="fer-data")["Contents"]]
    assert keys and all(key.startswith("dvc/") for key in keys)


def test_missing_rev_or_path_says_what(git_repo, tmp_path):
    init_repo(git_repo, remote_url=str(tmp_path / "remote"))
    write_dataset(git_repo / "data" / "prepared", version=1)
    version = add_and_push(git_repo, "data/prepared", message="data v1")

    with pytest.raises(DatasetNotFoundError) as missing_rev:
        fetch_dataset(git_repo, "data/prepared", "no-such-branch", tmp_path / "a")
    assert "no-such-branch" in str(missing_rev.value) and str(git_repo) in str(missing_rev.value)
    assert isinstance(missing_rev.value, ValueError)

    with pytest.raises(DatasetNotFoundError) as missing_path:
        fetch_dataset(git_repo, "data/other", version.rev, tmp_path / "b")
    assert "data/other" in str(missing_path.value) and version.rev in str(missing_path.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        fetch_dataset(git_repo, "data/prepared", version.rev, tmp_path / "taken")


def test_dataset_version_is_the_manifest_digest(tmp_path):
    data = write_dataset(tmp_path / "prepared", version=1)
    version = dataset_version(data)
    assert version["manifest_sha256"] == file_sha256(data / "manifest.csv")
    assert version["rows"] == 3 and version["splits"] == {"train": 3}
    with pytest.raises(FileNotFoundError, match="manifest.csv"):
        dataset_version(tmp_path)


def test_init_repo_is_idempotent_and_commits_only_its_own_files(git_repo, tmp_path):
    (git_repo / "notes.txt").write_text("work in progress")
    git(git_repo, "add", "notes.txt")
    init_repo(git_repo, remote_url=str(tmp_path / "remote"))
    init_repo(git_repo, remote_url=str(tmp_path / "remote"))  # again: no error, nothing new to commit
    assert git(git_repo, "log", "--format=%s").splitlines() == [f"DVC: init, remote storage -> {tmp_path / 'remote'}"]
    assert "notes.txt" not in git(git_repo, "show", "--name-only", "--format=", "HEAD")
    assert git(git_repo, "status", "--porcelain") == "A  notes.txt"  # still staged, not committed


def test_standalone_repo_inside_another_work_tree_is_its_own(git_repo, fer_home):
    inner = git_repo / "home" / "data-repo"
    init_repo(inner, standalone=True)
    assert (inner / ".git").is_dir()
    assert git(inner, "rev-parse", "--show-toplevel") == str(inner.resolve())
    assert git(inner, "config", "user.email")  # commits work even on a machine without an identity
    write_dataset(inner / "prepared", 1)
    version = add_and_push(inner, inner / "prepared", message="v1")
    assert git(inner, "rev-parse", "HEAD") == version.rev
    assert git(git_repo, "ls-files", "--", "home") == ""  # nothing of it went into the outer repo
