"""Names shared by the pipeline, the serving code and the Kubernetes manifests (k8s/).

Tests check that every name here exists in the rendered manifests. Change a name here and in k8s/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# The component image: every Kubeflow component runs in it (see docker/ and docs/deploy.md).
IMAGE_REPOSITORY = "ghcr.io/fer-mlops/fer"
IMAGE_REPOSITORY_GPU = "ghcr.io/fer-mlops/fer-cuda"   # the same Dockerfile, VARIANT=cuda (the train step)
IMAGE_TAG = "0.1.0"
TORCHSERVE_IMAGE = f"{IMAGE_REPOSITORY}-torchserve:{IMAGE_TAG}"

# Digests are pinned where Kubernetes users pin them: the `digest:` of an `images:` entry in the
# kustomizations (k8s/base for the CPU and TorchServe images, k8s/overlays/gpu for the CUDA one). The
# compiled pipeline reads the same entries, so the manifests and the pipeline run the same bytes.
K8S_DIR = Path(os.environ.get("FER_K8S_DIR") or Path(__file__).resolve().parents[1] / "k8s")
KUSTOMIZATIONS = ("base/kustomization.yaml", "overlays/gpu/kustomization.yaml")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def image_digests(k8s_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """{"REPOSITORY:TAG": "sha256:..."} for every kustomization `images:` entry that carries a digest.

    Empty outside a checkout (the component image has no k8s/ folder: it never compiles). A digest
    that is not `sha256:` + 64 hex digits is an error naming the file."""
    import yaml

    root = Path(k8s_dir) if k8s_dir is not None else K8S_DIR
    digests: dict[str, str] = {}
    for relative in KUSTOMIZATIONS:
        path = root / relative
        if not path.is_file():
            continue
        for entry in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("images") or []:
            digest = entry.get("digest")
            if not digest:
                continue
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise ValueError(f"{path}: image {entry.get('name')!r} has digest {digest!r}; expected "
                                 "sha256: and 64 hex digits (what `docker push` prints)")
            digests[f"{entry.get('newName') or entry['name']}:{entry.get('newTag', 'latest')}"] = digest
    return digests


# `fer images build` labels each image with the digest of the code it was built from; the docker
# runner refuses an image whose label differs from the checkout's (a step must not run older code).
SOURCE_LABEL = "io.github.fer-mlops.source-digest"
IMAGE_PACKAGES = ("fer_core", "fer_cli", "components", "pipelines")   # what the Dockerfiles copy


def source_digest(root: str | os.PathLike | None = None) -> str:
    """sha256 of pyproject.toml, the Dockerfiles and the packages' files the images are built from
    (tests excluded)."""
    import hashlib

    from fer_core.io import digest_tree

    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes())
    for path in sorted((root / "docker").glob("Dockerfile.*")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for package in IMAGE_PACKAGES:   # what .dockerignore lets into the build: no tests, no conftest.py
        digest_tree(digest, root / package, relative_to=root,
                    keep=lambda path: "tests" not in path.parts and path.name != "conftest.py")
    return "sha256:" + digest.hexdigest()


def pin_digests(digests: dict[str, str], k8s_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write `digest: sha256:...` into the kustomization `images:` entry named REPOSITORY, for each
    {REPOSITORY: DIGEST}; the entry's other lines and the files' comments stay as they are. Returns the
    files changed. A repository that no kustomization lists, or a malformed digest, is an error."""
    root = Path(k8s_dir) if k8s_dir is not None else K8S_DIR
    for repository, digest in digests.items():
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"{repository}: digest {digest!r} is not sha256: and 64 hex digits")
    pending, changed = dict(digests), []
    for relative in KUSTOMIZATIONS:
        path = root / relative
        if not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        edited = False
        for index, line in enumerate(lines):
            match = re.fullmatch(r"(\s*)- name: (\S+)\s*", line)
            if not match or match.group(2) not in pending:
                continue
            indent = match.group(1) + "  "
            end = index + 1        # the entry's own lines: indented under its `- name:`
            while end < len(lines) and lines[end].startswith(indent) and not lines[end].strip().startswith("#"):
                end += 1
            entry = f"{indent}digest: {pending.pop(match.group(2))}\n"
            for position in range(index + 1, end):
                if lines[position].strip().startswith("digest:"):
                    lines[position] = entry
                    break
            else:
                lines.insert(end, entry)
            edited = True
        if edited:
            path.write_text("".join(lines), encoding="utf-8")
            changed.append(path)
    if pending:
        raise ValueError(f"no kustomization under {root} lists {', '.join(sorted(pending))} in its images:")
    return changed


def pinned(image: str, digests: dict[str, str] | None = None) -> str:
    """IMAGE as REPOSITORY:TAG@sha256:... when a kustomization pins its digest, else unchanged."""
    if "@" in image:
        return image
    digest = (image_digests() if digests is None else digests).get(image)
    return f"{image}@{digest}" if digest else image


def component_images() -> tuple[str, str]:
    """(CPU image, GPU image) the components run in: $FER_COMPONENT_IMAGE / $FER_COMPONENT_IMAGE_GPU
    when set (another registry), else this release's tags, pinned by digest where k8s/ pins them."""
    digests = image_digests()
    return (os.environ.get("FER_COMPONENT_IMAGE") or pinned(f"{IMAGE_REPOSITORY}:{IMAGE_TAG}", digests),
            os.environ.get("FER_COMPONENT_IMAGE_GPU") or pinned(f"{IMAGE_REPOSITORY_GPU}:{IMAGE_TAG}", digests))


def __getattr__(name: str) -> str:
    """COMPONENT_IMAGE / COMPONENT_IMAGE_GPU, read from k8s/ when first asked for (by the components'
    definitions), so a malformed digest fails compiling, not every command that imports this module."""
    if name in ("COMPONENT_IMAGE", "COMPONENT_IMAGE_GPU"):
        cpu, gpu = component_images()
        globals().update(COMPONENT_IMAGE=cpu, COMPONENT_IMAGE_GPU=gpu)   # read once; later lookups find them
        return gpu if name.endswith("_GPU") else cpu
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

NAMESPACE = "fer"
# Secrets (templates in k8s/base/secrets): keys become env vars of the pipeline pods.
S3_SECRET = "fer-s3-credentials"          # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_SECRET = "fer-mlflow-credentials"  # MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
TORCHSERVE_TOKEN_SECRET = "fer-torchserve-token"  # keys: token (inference), management-token
TORCHSERVE_TOKEN_KEYS = ("token", "management-token")

# In-cluster services.
MINIO_SERVICE = "minio"
MLFLOW_SERVICE = "mlflow"
TORCHSERVE_SERVICE = "torchserve"
S3_ENDPOINT_IN_CLUSTER = f"http://{MINIO_SERVICE}.{NAMESPACE}.svc.cluster.local:9000"
MLFLOW_URI_IN_CLUSTER = f"http://{MLFLOW_SERVICE}.{NAMESPACE}.svc.cluster.local:5000"
TORCHSERVE_MANAGEMENT_IN_CLUSTER = f"http://{TORCHSERVE_SERVICE}.{NAMESPACE}.svc.cluster.local:8081"
MODEL_STORE_BUCKET = "fer-model-store"
DATA_BUCKET = "fer-data"

# GPU scheduling of the train step.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
GPU_TOLERATION_KEY = "nvidia.com/gpu"
PIPELINE_SERVICE_ACCOUNT = "fer-pipeline-runner"

# Added with k8s/ (issue "Cluster"): names only the manifests and docs/deploy.md need.
MLFLOW_ARTIFACTS_BUCKET = "fer-mlflow-artifacts"
POSTGRES_SERVICE = "postgres"
POSTGRES_SECRET = "fer-postgres-credentials"  # POSTGRES_USER, POSTGRES_PASSWORD
POSTGRES_SECRET_KEYS = ("POSTGRES_USER", "POSTGRES_PASSWORD")
# The MLflow server's own secret (CSRF key of its basic-auth app); only the server reads it.
MLFLOW_SERVER_SECRET = "fer-mlflow-server"
MLFLOW_SERVER_SECRET_KEYS = ("MLFLOW_FLASK_SERVER_SECRET_KEY",)
# Pods carrying this label may reach the TorchServe management API (NetworkPolicy in k8s/base);
# the pipeline puts it on every step's pod.
PIPELINE_POD_LABEL = ("fer-mlops/pipeline", "true")
# ...and only from namespaces carrying this label: `fer` itself and the Kubeflow profile namespaces an
# administrator labels (`kubectl label namespace <profile> fer-mlops/pipelines=allowed`); a pod that
# sets the pod label in any other namespace gets nowhere.
PIPELINE_NAMESPACE_LABEL = ("fer-mlops/pipelines", "allowed")
# Namespaces whose pods may scrape TorchServe's metrics port (Prometheus); label them likewise.
METRICS_NAMESPACE_LABEL = ("fer-mlops/metrics", "allowed")
