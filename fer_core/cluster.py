"""Names shared by the pipeline, the serving code and the Kubernetes manifests (k8s/).

Tests check that every name here exists in the rendered manifests. Change a name here and in k8s/.
"""

from __future__ import annotations

import os

# The component image: every Kubeflow component runs in it (see docker/ and docs/deploy.md).
IMAGE_REPOSITORY = "ghcr.io/fer-mlops/fer"
IMAGE_TAG = "0.1.0"
COMPONENT_IMAGE = os.environ.get("FER_COMPONENT_IMAGE", f"{IMAGE_REPOSITORY}:{IMAGE_TAG}")
COMPONENT_IMAGE_GPU = os.environ.get("FER_COMPONENT_IMAGE_GPU", f"{IMAGE_REPOSITORY}:{IMAGE_TAG}-cuda")
TORCHSERVE_IMAGE = f"{IMAGE_REPOSITORY}-torchserve:{IMAGE_TAG}"

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
