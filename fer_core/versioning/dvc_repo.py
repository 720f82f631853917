"""DVC adapter: put a dataset under DVC in a git repo, push it to a remote, get it back at a revision.

Uses DVC's Python API (`dvc.repo.Repo`: init, config, add, push, get) and plain `git` for commits.
Remotes: a local folder (default $FER_HOME/dvc-remote) or s3://bucket/prefix; for S3 only the endpoint
URL goes into .dvc/config, credentials come from the environment (AWS_ACCESS_KEY_ID, ...), never a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fer_core.home import fer_home

DEFAULT_REMOTE = "storage"


class VersioningError(RuntimeError):
    """A git or DVC operation failed; the message names the repo and the step."""


class DatasetNotFoundError(ValueError):
    """The asked-for path or revision is not in the DVC repo (or not on its remote)."""

    def __init__(self, repo: str, rev: str | None, path: str, detail: str) -> None:
        self.repo, self.rev, self.path = repo, rev, path
        super().__init__(f"cannot get {path!r} at rev {rev or 'HEAD'!r} from DVC repo {repo}: {detail}")


@dataclass(frozen=True)
class DataVersion:
    repo: str        # the repo folder or URL
    path: str        # the dataset path inside the repo (relative, posix)
    rev: str         # git commit sha that pins the .dvc file
    md5: str         # md5 of the DVC out (a directory's ends in .dir)
    remote: str      # remote URL the data was pushed to / fetched from ("" when unknown)


def _git(repo_dir: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise VersioningError(f"git {' '.join(args)} failed in {repo_dir}: {detail}")
    return result.stdout.strip()


def resolve_revision(repo: str | Path, rev: str) -> str:
    """REV (empty = HEAD; a branch, tag or commit) of the git repo REPO (a folder or URL) as its commit
    id, without fetching the data: what pins a dataset version (a pipeline's cache key); REV unchanged
    when git cannot tell (`fetch_dataset` then reports the problem)."""
    if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev):
        return rev
    wanted = rev or "HEAD"
    try:
        if Path(repo).is_dir():
            found = _git(Path(repo), "rev-parse", "--verify", "--quiet", f"{wanted}^{{commit}}")
        else:  # a URL: ask the remote, no clone
            result = subprocess.run(["git", "ls-remote", str(repo), wanted], capture_output=True, text=True,
                                    timeout=60, check=False)
            found = result.stdout.split()[0] if result.returncode == 0 and result.stdout.split() else ""
    except (VersioningError, OSError, subprocess.TimeoutExpired):
        return rev
    return found if len(found) == 40 else rev


def _remote_config(remote_url: str, endpoint_url: str | None) -> dict[str, str]:
    if remote_url.startswith("s3://"):
        config = {"url": remote_url}
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            config["endpointurl"] = endpoint
        return config
    if "://" in remote_url:
        raise ValueError(f"DVC remote {remote_url!r}: only a local folder or s3://bucket/prefix is supported here")
    # absolute, so a clone of the repo elsewhere still finds it
    path = Path(remote_url).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return {"url": str(path)}


def init_repo(path: str | Path, *, remote_url: str | None = None, remote_name: str = DEFAULT_REMOTE,
              endpoint_url: str | None = None, standalone: bool = False) -> Path:
    """git init (when needed) + dvc init (when needed) + `remote_name` as the default remote; returns the
    repo folder. Commits the DVC scaffolding so the repo is clean afterwards.

    By default a folder inside another git work tree becomes a DVC sub-project of that repo (a
    monorepo). `standalone=True` makes PATH its own git repo instead (e.g. a data repo under
    $FER_HOME, which lives inside the project's checkout), with a committer identity of its own when
    the machine has none configured."""
    from dvc.repo import Repo

    repo_dir = Path(path).resolve()
    repo_dir.mkdir(parents=True, exist_ok=True)
    if standalone and not (repo_dir / ".git").exists():
        _git(repo_dir, "init", "--quiet")
    try:
        top = Path(_git(repo_dir, "rev-parse", "--show-toplevel")).resolve()
    except VersioningError:  # not inside a git work tree yet
        _git(repo_dir, "init", "--quiet")
        top = repo_dir
    if standalone and not subprocess.run(["git", "-C", str(repo_dir), "config", "user.email"],
                                         capture_output=True, text=True, check=False).stdout.strip():
        _git(repo_dir, "config", "user.email", "fer@localhost")
        _git(repo_dir, "config", "user.name", "fer")
    if (repo_dir / ".dvc").is_dir():
        repo = Repo(str(repo_dir))
    else:  # a DVC project may live in a sub-folder of a git repo (a monorepo)
        repo = Repo.init(str(repo_dir), subdir=top != repo_dir)
    try:
        remote = _remote_config(remote_url or str(fer_home() / "dvc-remote"), endpoint_url)
        with repo.config.edit() as config:
            config["remote"][remote_name] = remote
            config["core"]["remote"] = remote_name
            config["core"]["autostage"] = True  # dvc add stages its .dvc/.gitignore (add_and_push commits them)
    finally:
        repo.close()
    scaffolding = [name for name in (".dvc/config", ".dvc/.gitignore", ".dvcignore") if (repo_dir / name).exists()]
    _git(repo_dir, "add", *scaffolding)
    if _git(repo_dir, "status", "--porcelain", "--", *scaffolding):
        # only these paths: whatever else the user has staged stays staged, uncommitted
        _git(repo_dir, "commit", "--quiet", "-m", f"DVC: init, remote {remote_name} -> {remote['url']}",
             "--", *scaffolding)
    return repo_dir


def add_and_push(repo_dir: str | Path, data_path: str | Path, *, message: str) -> DataVersion:
    """`dvc add` DATA_PATH, commit its .dvc file (and .gitignore) to git, `dvc push`; returns the version."""
    from dvc.repo import Repo

    repo_dir = Path(repo_dir).resolve()
    target = Path(data_path)
    target = (target if target.is_absolute() else repo_dir / target).resolve()
    try:
        rel = target.relative_to(repo_dir).as_posix()
    except ValueError:
        raise ValueError(f"{target} is not inside the DVC repo {repo_dir}") from None
    if not target.exists():
        raise FileNotFoundError(f"{target}: nothing to version")
    with Repo(str(repo_dir)) as repo:
        stages = repo.add(str(target))
        out = stages[0].outs[0]
        md5 = out.hash_info.value
        dvc_file = Path(stages[0].path).relative_to(repo_dir).as_posix()
        remote_name = repo.config["core"].get("remote", "")
        remote_url = repo.config["remote"].get(remote_name, {}).get("url", "") if remote_name else ""
        gitignore = (Path(stages[0].path).parent / ".gitignore").relative_to(repo_dir).as_posix()
        tracked = [dvc_file, *([gitignore] if (repo_dir / gitignore).exists() else [])]
        _git(repo_dir, "add", *tracked)
        if _git(repo_dir, "status", "--porcelain", "--", *tracked):
            _git(repo_dir, "commit", "--quiet", "-m", message, "--", *tracked)
        rev = _git(repo_dir, "rev-parse", "HEAD")
        try:
            repo.push(targets=[str(target)])
        except Exception as exc:  # DVC raises several kinds (UploadError, NoRemoteError, RemoteConfigError)
            raise VersioningError(f"dvc push of {rel} from {repo_dir} to {remote_url or 'the default remote'} "
                                  f"failed: {exc}") from exc
    return DataVersion(repo=str(repo_dir), path=rel, rev=rev, md5=md5, remote=remote_url)


def fetch_dataset(repo_url: str | Path, path: str, rev: str | None, out_dir: str | Path) -> DataVersion:
    """Materialise `path` at git revision `rev` of DVC repo `repo_url` (a folder or a git URL) into
    `out_dir` (which must not exist or be empty), pulling from the repo's remote as `dvc get` does.

    Works from a fresh clone with an empty cache. Raises DatasetNotFoundError when the revision or path
    does not exist or the data is not on the remote.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.scm import SCMError
    from dvc_data.index import DataIndexError

    repo_url = str(repo_url)
    path = str(path).strip("/")
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not an empty folder; pick a new --out")
    # download into a sibling temp folder, then move: a failed fetch leaves no half dataset behind
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        try:
            Repo.get(repo_url, path, out=str(staging / "data"), rev=rev)
        except (SCMError, DvcException, FileNotFoundError) as exc:
            raise DatasetNotFoundError(repo_url, rev, path, _dvc_message(exc)) from exc
        except DataIndexError as exc:  # e.g. the revision's .dvc/config names no remote to pull from
            raise DatasetNotFoundError(repo_url, rev, path, f"{_dvc_message(exc)}; is .dvc/config (with its "
                                       "remote) committed at that revision, and the data pushed?") from exc
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging / "data", out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _describe(repo_url, path, rev)


def _dvc_message(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such path in the repo at that revision"
    text = str(exc).strip() or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text = f"{text} ({str(cause).strip()})"
    return text


def _describe(repo_url: str, path: str, rev: str | None) -> DataVersion:
    """The commit sha, out md5 and remote of `path` at `rev` (read from the .dvc file in git)."""
    from dvc.repo import Repo

    with Repo.open(repo_url, rev=rev, uninitialized=True) as repo:
        sha = repo.scm.get_rev() if rev is None else repo.scm.resolve_rev(rev)
        md5, remote_url = "", ""
        remote_name = repo.config["core"].get("remote", "")
        if remote_name:
            remote_url = repo.config["remote"].get(remote_name, {}).get("url", "")
        info = repo.dvcfs.info(path)
        dvc_info = info.get("dvc_info") or {}
        md5 = str(dvc_info.get("md5") or info.get("md5") or "")
    return DataVersion(repo=repo_url, path=path, rev=sha, md5=md5, remote=remote_url)
