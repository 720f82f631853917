"""Build a reproducible TorchServe .mar from a run folder or a registry version, and publish it.

`resolve_run` / `resolve_registry` find model.safetensors + meta.json (and name the model version: the registry
version, or "run-<hash>" of the two files); `build_mar` runs torch-model-archiver (unzipped) and zips its
output itself with sorted entries, fixed timestamps and a fixed `createdOn`, so building the same model twice
gives the same bytes (a changed .mar always means a changed model). `publish_mar` puts it in a model
store: a local folder or s3://bucket/prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from fer_core.config import ServeConfig
from fer_core.io import atomic_write_bytes
from fer_core.evaluation.trust import REVIEW_FILE, ReviewRule
from fer_core.serving.inference import META_FILE, MODEL_FILE, load_meta

HANDLER_SOURCE = Path(__file__).with_name("handler.py")
MANIFEST_NAME = "MAR-INF/MANIFEST.json"
# Zip's epoch: every entry gets it, so rebuilding never changes the bytes.
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FIXED_CREATED_ON = "01/01/1980 00:00:00"
MODEL_URI_PATTERN = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class PackageError(ValueError):
    """A model source or store that cannot be used; the message says which file or URI and why."""


@dataclass(frozen=True)
class ModelSource:
    """A folder holding model.safetensors + meta.json, the version to serve it as, and where it came from."""

    model_dir: Path
    model_version: str
    origin: str

    @property
    def model_path(self) -> Path:
        return self.model_dir / MODEL_FILE

    @property
    def meta_path(self) -> Path:
        return self.model_dir / META_FILE


def run_version(model_dir: str | Path) -> str:
    """"run-<12 hex>" from the bytes of model.safetensors and meta.json: same files, same version."""
    digest = hashlib.sha256()
    for name in (MODEL_FILE, META_FILE):
        digest.update(name.encode())
        digest.update(hashlib.sha256(Path(model_dir, name).read_bytes()).digest())
    return f"run-{digest.hexdigest()[:12]}"


def _check_model_dir(model_dir: Path, origin: str) -> None:
    for name in (MODEL_FILE, META_FILE):
        if not (model_dir / name).is_file():
            raise PackageError(f"{origin}: {name} missing in {model_dir} (a trained run holds {MODEL_FILE} and {META_FILE})")
    load_meta(model_dir / META_FILE)


def resolve_run(run_dir: str | Path) -> ModelSource:
    """A local run folder (fer train's output) as a model source, versioned by its content hash."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise PackageError(f"run folder not found: {run_dir}")
    _check_model_dir(run_dir, str(run_dir))
    return ModelSource(run_dir, run_version(run_dir), str(run_dir))


def _find_model_dir(root: Path, origin: str) -> Path:
    """The one folder under `root` holding model.safetensors (the artifact layout may nest it)."""
    if (root / MODEL_FILE).is_file():
        return root
    found = sorted(path.parent for path in root.rglob(MODEL_FILE))
    if len(found) != 1:
        raise PackageError(f"{origin}: expected one {MODEL_FILE} in the downloaded artifacts, found {len(found)}"
                           f" under {root}")
    return found[0]


def registry_version(model_uri: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """models:/NAME@alias or models:/NAME/N -> (name, registry version number as text)."""
    match = MODEL_URI_PATTERN.match(model_uri)
    if not match:
        raise PackageError(f"model URI {model_uri!r} must look like models:/NAME@alias or models:/NAME/VERSION")
    if match["version"]:
        return match["name"], match["version"]
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(match["name"], match["alias"])
    except MlflowException as exc:
        raise PackageError(f"{model_uri}: no such registered model alias ({exc.message})") from None
    return match["name"], str(version.version)


def resolve_registry(model_uri: str, dst_dir: str | Path, tracking_uri: str | None = None) -> ModelSource:
    """Download a registry version's artifacts (model.safetensors + meta.json) into `dst_dir`."""
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from fer_core.home import default_tracking_uri

    tracking_uri = tracking_uri or default_tracking_uri()
    _, version = registry_version(model_uri, tracking_uri)
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    # models:/ URIs resolve through the process-wide registry URI (the registry_uri argument is not
    # used for them), so point it at our registry for this call and put it back afterwards.
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst_dir))
    except MlflowException as exc:
        raise PackageError(f"{model_uri}: download failed: {exc.message}") from None
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    model_dir = _find_model_dir(Path(local), model_uri)
    _check_model_dir(model_dir, model_uri)
    return ModelSource(model_dir, version, model_uri)


def model_config_yaml(serve: ServeConfig) -> str:
    """TorchServe's per-model config: the handler's limits and face step. Workers, batching and timeouts
    are the environment's, set when the version is registered (fer_core.serving.client.Registration)."""
    config = {
        "responseTimeout": serve.response_timeout_s,
        "handler": {"max_image_pixels": serve.max_image_pixels, "torch_threads": serve.torch_threads,
                    "faces": serve.faces, "max_faces": serve.max_faces},
    }
    return yaml.safe_dump(config, sort_keys=True)


def write_reproducible_mar(archive_dir: Path, dst: Path) -> None:
    """Zip an unpacked archive deterministically: sorted names, fixed times/permissions, fixed createdOn."""
    entries = {path.relative_to(archive_dir).as_posix(): path.read_bytes()
               for path in archive_dir.rglob("*") if path.is_file()}
    if MANIFEST_NAME not in entries:
        raise PackageError(f"{archive_dir}: torch-model-archiver wrote no {MANIFEST_NAME}")
    manifest = json.loads(entries[MANIFEST_NAME])
    manifest["createdOn"] = FIXED_CREATED_ON
    entries[MANIFEST_NAME] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3  # unix, whatever the host
                archive.writestr(info, entries[name], compresslevel=6)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def mar_file_name(model_name: str, model_version: str) -> str:
    return f"{model_name}-{model_version}.mar"


def build_mar(source: ModelSource, out_dir: str | Path, serve: ServeConfig, model_name: str | None = None) -> Path:
    """torch-model-archiver on model.safetensors + handler + meta.json (+ review.json, the review rule, when
    the run was evaluated) + model-config.yaml -> OUT/NAME-VERSION.mar.

    The archiver runs in a subprocess with its own TMPDIR: it stages files in `$TMPDIR/<model name>`,
    which two builds at once would otherwise share.
    """
    model_name = model_name or serve.model_name
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / mar_file_name(model_name, source.model_version)
    with tempfile.TemporaryDirectory(prefix="fer-mar-") as work:
        work_dir = Path(work)
        staging, export, tmp = work_dir / "in", work_dir / "out", work_dir / "tmp"
        for folder in (staging, export, tmp):
            folder.mkdir()
        shutil.copyfile(source.model_path, staging / MODEL_FILE)
        shutil.copyfile(source.meta_path, staging / META_FILE)
        shutil.copyfile(HANDLER_SOURCE, staging / "handler.py")
        (staging / "model-config.yaml").write_text(model_config_yaml(serve), encoding="utf-8")
        extra = [staging / META_FILE]
        if (source.model_dir / REVIEW_FILE).is_file():  # the review rule evaluation chose on validation
            ReviewRule.from_dict(json.loads((source.model_dir / REVIEW_FILE).read_text(encoding="utf-8")))
            shutil.copyfile(source.model_dir / REVIEW_FILE, staging / REVIEW_FILE)
            extra.append(staging / REVIEW_FILE)
        command = [
            sys.executable, "-m", "model_archiver.model_packaging",
            "--model-name", model_name, "--version", source.model_version,
            "--serialized-file", str(staging / MODEL_FILE), "--handler", str(staging / "handler.py"),
            "--extra-files", ",".join(map(str, extra)), "--config-file", str(staging / "model-config.yaml"),
            "--export-path", str(export), "--archive-format", "no-archive", "--force",
        ]
        env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp)}
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        built = export / model_name  # no-archive: the archive's folder; we zip it ourselves
        if result.returncode != 0 or not built.is_dir():
            raise PackageError(f"torch-model-archiver failed for {source.origin} (exit {result.returncode}):\n"
                               f"{result.stderr.strip() or result.stdout.strip()}")
        write_reproducible_mar(built, final)
    return final


def read_mar_manifest(mar_path: str | Path) -> dict:
    """MAR-INF/MANIFEST.json of a .mar (model name and version without unpacking the model)."""
    try:
        with zipfile.ZipFile(mar_path) as archive:
            return json.loads(archive.read(MANIFEST_NAME))
    except (zipfile.BadZipFile, KeyError, FileNotFoundError) as exc:
        raise PackageError(f"{mar_path}: not a model archive ({exc})") from None


def publish_mar(mar_path: str | Path, store: str | Path) -> str:
    """Copy a .mar into a model store (local folder or s3://bucket/prefix); returns where it went.

    Local copies are atomic (a TorchServe reading the store never sees half a file). S3 uses boto3's
    usual settings (AWS_ENDPOINT_URL for MinIO/moto).
    """
    mar_path = Path(mar_path)
    if not mar_path.is_file():
        raise PackageError(f"model archive not found: {mar_path}")
    store = str(store)
    if store.startswith("s3://"):
        import boto3

        bucket, _, prefix = store[len("s3://"):].partition("/")
        if not bucket:
            raise PackageError(f"model store {store!r} has no bucket (expected s3://bucket/prefix)")
        key = f"{prefix.strip('/')}/{mar_path.name}" if prefix.strip("/") else mar_path.name
        boto3.client("s3").upload_file(str(mar_path), bucket, key)
        return f"s3://{bucket}/{key}"
    if "://" in store:
        raise PackageError(f"model store {store!r}: only a local folder or s3://bucket/prefix is supported")
    target = Path(store).resolve() / mar_path.name
    if target != mar_path.resolve():
        atomic_write_bytes(target, mar_path.read_bytes())
    return str(target)
