"""Atomic writes: a killed run never leaves a half-written file or folder behind; and outputs that are
replaced only when this project made them (`check_output_dir`): a step writes only inside its own
output, and never deletes what a user put there."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


# mkstemp/mkdtemp create 0600/0700 entries; a dataset or model written here must be readable the way
# any other file the user writes is (e.g. by a TorchServe or a pod running under another uid).
_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


PRODUCER_KEY = "producer"  # in an output's marker file: which command wrote the folder


class OutputError(ValueError):
    """An output folder this command may not write (someone else's data, or overlapping its source)."""


def _producer_of(folder: Path, marker: str) -> str | None:
    try:
        recorded = read_json(folder / marker)
    except (OSError, ValueError):
        return None
    return recorded.get(PRODUCER_KEY) if isinstance(recorded, dict) else None


def check_output_dir(out: str | os.PathLike, *, producer: str, marker: str,
                     sources: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse an output folder that this command may not replace; returns it resolved.

    Allowed: a folder that does not exist, an empty one, or one whose `marker` file records `producer`
    (an earlier output of the same command). Refused, before anything is read or written: a non-empty
    folder with anything else in it, and an output equal to, inside or around one of `sources` (local
    paths; `s3://...` sources are skipped).
    """
    out = Path(out).resolve()
    for source in sources:
        text = str(source)
        if not text or "://" in text:
            continue
        src = Path(text).resolve()
        if out == src or src in out.parents:
            raise OutputError(f"output {out} is inside the source {src}: writing it would change the "
                              "source; choose an output folder outside the source")
        if out in src.parents:
            raise OutputError(f"the source {src} is inside the output {out}: replacing the output would "
                              "delete the source; choose an output folder that does not contain it")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"output {out} exists and is not a folder; nothing was changed")
        if any(out.iterdir()) and _producer_of(out, marker) != producer:
            raise OutputError(f"output {out} is not empty and was not made by `{producer}` (no {marker} "
                              f"written by it); nothing was changed. Choose a new or empty folder.")
    return out


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, producer: str | None = None, marker: str | None = None
               ) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final` in one rename.

    On an exception (or a kill) `final` is untouched and the temporary folder is removed (or, after a
    kill, left as `.<name>.tmp-*` beside it, which the next run clears). With `producer` and `marker`,
    an existing `final` is replaced only when `check_output_dir` allows it (checked again just before
    the rename, in case the folder changed meanwhile).
    """
    final = Path(final).resolve()
    if producer and marker:
        check_output_dir(final, producer=producer, marker=marker)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if producer and marker:
        try:
            check_output_dir(final, producer=producer, marker=marker)
        except OutputError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


TEMP_INFIX = ".tmp-"  # atomic_write_bytes's temporary files: .<name>.tmp-XXXX beside the target


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete `.<name>.tmp-*` files that a killed `atomic_write_bytes(path)` left beside `path`.

    Only for a writer that knows it is the one process writing `path` (a training run on resume);
    returns what it removed.
    """
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{path.name}{TEMP_INFIX}*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_INFIX}", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def digest_tree(digest: Any, folder: str | os.PathLike, *, relative_to: str | os.PathLike,
                keep: Callable[[Path], bool] = lambda path: True) -> None:
    """Feed DIGEST (a hashlib object) every file under FOLDER that KEEP accepts, in sorted order: its path
    relative to RELATIVE_TO, a NUL, its bytes. __pycache__ folders are left out. What code digests
    (the ingest step's cache key, the images' source label) are made of."""
    relative_to = Path(relative_to)
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(relative_to)
        if path.is_file() and "__pycache__" not in relative.parts and keep(relative):
            digest.update(str(relative).encode() + b"\0" + path.read_bytes())
