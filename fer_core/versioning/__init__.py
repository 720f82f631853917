"""DVC adapter: dataset versions in a git + DVC repo, pushed to a local or S3 remote.

    init_repo(PATH, remote_url=..., endpoint_url=...)    git + dvc init, default remote
    add_and_push(REPO, DATA, message=...) -> DataVersion dvc add, git commit, dvc push
    fetch_dataset(REPO_URL, PATH, REV, OUT) -> DataVersion  `dvc get` at a revision (fresh clones too)
    dataset_version(DATA) -> dict                         manifest.csv sha256 (the digest MLflow records)

Importing this package does not import DVC.
"""

from fer_core.data.prepared import dataset_version, file_sha256
from fer_core.versioning.dvc_repo import (DEFAULT_REMOTE, DatasetNotFoundError, DataVersion, VersioningError,
                                          add_and_push, fetch_dataset, init_repo, resolve_revision)

__all__ = ["DEFAULT_REMOTE", "DataVersion", "DatasetNotFoundError", "VersioningError", "add_and_push",
           "dataset_version", "fetch_dataset", "file_sha256", "init_repo", "resolve_revision"]
