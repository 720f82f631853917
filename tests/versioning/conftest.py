"""Real git + DVC repos in tmp folders; remotes: a local folder or moto's S3 server."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from pathlib import Path

import pytest


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def make_git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "config", "user.name", "FER Tests")
    git(path, "config", "user.email", "tests@fer.invalid")
    git(path, "config", "commit.gpgsign", "false")
    return path


def write_dataset(root: Path, version: int) -> Path:
    """A few small files + manifest.csv; `version` changes the bytes (and adds a file in v2)."""
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(2 + version):
        rel = f"images/train/img_{index}.png"
        (root / rel).write_bytes(f"fake image {index} of version {version}".encode() * 3)
        rows.append([rel, index % 2, ["neutral", "happy"][index % 2], "train", rel,
                     hashlib.sha256((root / rel).read_bytes()).hexdigest(), 8, 8])
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "label_name", "split", "source_id", "sha256", "width", "height"])
        writer.writerows(rows)
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def git_repo(tmp_path) -> Path:
    return make_git_repo(tmp_path / "repo")
