"""add_and_push -> git clone -> fetch_dataset at a rev gives the same bytes (local and S3 remotes)."""

from __future__ import annotations

import shutil
import subprocess

import boto3
import pytest

from fer_core.versioning import (DatasetNotFoundError, add_and_push, dataset_version, fetch_dataset, file_sha256,
                                 init_repo)
from tests.docs import doc_block
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


def test_the_docs_plain_tools_recipe_runs_as_written_and_its_revision_is_fetchable(tmp_path, s3_env):
    """docs/data-versioning.md's `git init && dvc init ... dvc push` block, typed as a user would (the
    endpoint line points at moto's S3 server instead of MinIO), then `fetch_dataset` of the printed
    revision from a fresh clone gets the same bytes."""
    import os
    import re
    import sys
    from pathlib import Path

    block = doc_block("docs/data-versioning.md", "or with the plain tools, which do the same:")
    assert "git add .dvc/config" in block  # the remote must travel with the revision
    boto3.client("s3").create_bucket(Bucket="fer-data")
    script = block.replace("http://localhost:9000", s3_env)
    repo = tmp_path / "datarepo"
    data = write_dataset(repo / "rafdb", version=1)
    expected = tree_bytes(data)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    done = subprocess.run(["bash", "-ec", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rev = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{40}", rev), done.stdout
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    fetch_dataset(clone, "rafdb", rev, tmp_path / "raw")
    assert tree_bytes(tmp_path / "raw") == expected


def test_a_revision_without_a_remote_is_a_dataset_not_found_error(tmp_path):
    """Committed without .dvc/config (the docs' old recipe): the clone has no remote to pull from."""
    import sys
    from pathlib import Path

    dvc = str(Path(sys.executable).parent / "dvc")
    repo = tmp_path / "datarepo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    git(repo, "config", "user.email", "t@x.invalid")
    git(repo, "config", "user.name", "t")
    subprocess.run([dvc, "init", "--quiet"], cwd=repo, check=True)
    write_dataset(repo / "rafdb", version=1)
    subprocess.run([dvc, "add", "--quiet", "rafdb"], cwd=repo, check=True)
    git(repo, "add", "rafdb.dvc", ".gitignore")
    git(repo, "commit", "--quiet", "-m", "no remote")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    with pytest.raises(DatasetNotFoundError, match="rafdb"):
        fetch_dataset(clone, "rafdb", git(repo, "rev-parse", "HEAD"), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_the_docs_python_recipe_runs_as_written(tmp_path, fer_home):
    """docs/data-versioning.md's init_repo/add_and_push block, as written, in a folder holding rafdb/
    inside datarepo/; the printed revision is fetchable from a fresh clone (local remote under FER_HOME)."""
    import os
    import re
    import sys

    block = doc_block("docs/data-versioning.md", r"From Python \(what the tests do\):", "python")
    data = write_dataset(tmp_path / "datarepo" / "rafdb", version=1)
    expected = tree_bytes(data)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rev, md5 = done.stdout.strip().splitlines()[-1].split()
    assert re.fullmatch(r"[0-9a-f]{40}", rev) and md5.endswith(".dir")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(tmp_path / "datarepo"), str(clone)], check=True)
    fetch_dataset(clone, "rafdb", rev, tmp_path / "raw")
    assert tree_bytes(tmp_path / "raw") == expected
