"""What keys the local run's cache beyond the step arguments: the commit a DVC revision names, and the
fingerprint of the code and of a local source folder."""

from __future__ import annotations

import os

from fer_core.versioning import resolve_revision
from pipelines.runner import source_fingerprint
from tests.versioning.conftest import git, make_git_repo


def test_a_moving_revision_is_resolved_to_its_commit(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("one")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "one")
    first = git(repo, "rev-parse", "HEAD").strip()
    assert resolve_revision(str(repo), "") == first
    git(repo, "tag", "v1")
    (repo / "a.txt").write_text("two")
    git(repo, "commit", "-qam", "two")
    second = git(repo, "rev-parse", "HEAD").strip()
    assert second != first
    assert resolve_revision(str(repo), "") == second            # HEAD moved: another cache key
    assert resolve_revision(str(repo), "v1") == first
    assert resolve_revision(str(repo), first) == first
    assert resolve_revision(str(repo), "no-such-branch") == "no-such-branch"  # ingest reports it


def test_the_fingerprint_follows_the_folder(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    before = source_fingerprint(str(folder))
    assert source_fingerprint(str(folder)) == before
    (folder / "a.jpg").write_bytes(b"xy")
    os.utime(folder / "a.jpg", ns=(1, 1))
    assert source_fingerprint(str(folder)) != before
    assert source_fingerprint("s3://bucket/prefix") == source_fingerprint("")  # the code's part only
