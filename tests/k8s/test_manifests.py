"""k8s/ renders, validates and keeps its promises: hardening, auth, names shared with fer_core/cluster.py.

Offline: `kubectl kustomize` and `kubernetes-validate --strict` only (no cluster).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from fer_core import cluster
from tests.k8s.manifests import (K8S, SECRETS, TARGETS, containers, find, needs_kubectl, one, pod_specs,
                                 render)

pytestmark = needs_kubectl
VALIDATOR = Path(sys.executable).parent / "kubernetes-validate"
COMPONENT_IMAGE = f"{cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}"        # cluster.py defaults, not env
COMPONENT_IMAGE_GPU = f"{cluster.IMAGE_REPOSITORY_GPU}:{cluster.IMAGE_TAG}"
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")


def builtin(objects: list[dict]) -> list[dict]:
    """Objects of Kubernetes' own API groups (the validator has schemas for these, not for CRDs)."""
    return [o for o in objects if "." not in o["apiVersion"].split("/")[0] or o["apiVersion"].split("/")[0]
            .endswith(".k8s.io")]


def validate(objects: list[dict], path: Path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
    return subprocess.run([str(VALIDATOR), "--strict", "--quiet", str(path)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("target", TARGETS + (SECRETS,))
def test_every_target_renders_into_namespace(target):
    objects = render(target)
    assert objects, f"k8s/{target} rendered nothing"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == cluster.NAMESPACE, \
                f"k8s/{target}: {obj['kind']}/{obj['metadata']['name']} is not in namespace {cluster.NAMESPACE}"


@pytest.mark.parametrize("target", TARGETS + (SECRETS,))
def test_builtin_kinds_pass_strict_schema_validation(target, tmp_path):
    objects = builtin(render(target))
    result = validate(objects, tmp_path / "rendered.yaml")
    assert result.returncode == 0, f"k8s/{target}:\n{result.stdout}\n{result.stderr}"


def test_strict_validation_catches_an_unknown_field(tmp_path):
    """The check above can fail: a misspelt field in a rendered Deployment is rejected."""
    deployment = one(render("base"), "Deployment", "mlflow")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"tcpSocket": {"port": 5000}}
    assert validate([broken], tmp_path / "broken.yaml").returncode != 0


def test_custom_resources_are_only_the_training_operators_and_istios():
    assert all(o in builtin(render(t)) for t in ("base", "overlays/local", SECRETS) for o in render(t))
    custom = [o for o in render("overlays/gpu") if o not in builtin(render("overlays/gpu"))]
    assert [(o["apiVersion"], o["kind"]) for o in custom] == [("kubeflow.org/v1", "PyTorchJob")]
    # Istio's resources have no schema in kubernetes-validate: checked field by field below instead
    custom = [o for o in render("overlays/istio") if o not in builtin(render("overlays/istio"))]
    assert sorted((o["apiVersion"], o["kind"]) for o in custom) == [
        ("security.istio.io/v1", "AuthorizationPolicy"), ("security.istio.io/v1", "PeerAuthentication"),
        ("security.istio.io/v1", "RequestAuthentication")]


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_is_hardened_and_sized(target):
    problems = []
    for obj in render(target):
        for label, pod in pod_specs(obj):
            pod_ctx = pod.get("securityContext", {})
            if pod_ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{label}: pod seccompProfile is not RuntimeDefault")
            if pod_ctx.get("runAsNonRoot") is not True or not pod_ctx.get("runAsUser"):
                problems.append(f"{label}: pod does not set runAsNonRoot and a non-zero runAsUser")
            for kind, container in containers(pod):
                where = f"{label} {kind}/{container['name']}"
                ctx = container.get("securityContext", {})
                expected = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}
                for key, value in expected.items():
                    if ctx.get(key) is not value:
                        problems.append(f"{where}: securityContext.{key} is not {value}")
                if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
                    problems.append(f"{where}: capabilities do not drop ALL")
                if ctx.get("privileged") or ctx.get("runAsUser") == 0:
                    problems.append(f"{where}: privileged or root")
                resources = container.get("resources", {})
                for part in ("requests", "limits"):
                    for resource in ("cpu", "memory"):
                        if resource not in resources.get(part, {}):
                            problems.append(f"{where}: no {part}.{resource}")
                if obj["kind"] in LONG_RUNNING and kind == "containers":
                    for probe in ("livenessProbe", "readinessProbe"):
                        if probe not in container:
                            problems.append(f"{where}: no {probe}")
                if not str(container["image"]).rpartition(":")[2] or container["image"].endswith(":latest"):
                    problems.append(f"{where}: image {container['image']} has no fixed tag")
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                if "/tmp" not in mounts:
                    problems.append(f"{where}: read-only root filesystem but no writable /tmp")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", TARGETS)
def test_every_reference_resolves(target):
    """ConfigMaps, Secrets, PVCs and ServiceAccounts that pods name exist (Secrets: as templates)."""
    objects = render(target)
    defined = {(o["kind"], o["metadata"]["name"]) for o in objects + render(SECRETS)}
    missing = []
    for obj in objects:
        for label, pod in pod_specs(obj):
            wanted = [("ServiceAccount", pod["serviceAccountName"])] if "serviceAccountName" in pod else []
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    wanted.append(("ConfigMap", volume["configMap"]["name"]))
                if "secret" in volume:
                    wanted.append(("Secret", volume["secret"]["secretName"]))
                if "persistentVolumeClaim" in volume:
                    wanted.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
            for _, container in containers(pod):
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        wanted.append(("Secret", source["secretRef"]["name"]))
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        wanted.append(("Secret", ref["name"]))
                mounts = {m["name"] for m in container.get("volumeMounts", [])}
                volumes = {v["name"] for v in pod.get("volumes", [])}
                volumes |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
                missing += [f"{label}/{container['name']}: volume {m}" for m in mounts - volumes]
            missing += [f"{label}: {kind}/{name}" for kind, name in wanted if (kind, name) not in defined]
    assert not missing, f"k8s/{target} refers to objects it does not define:\n" + "\n".join(missing)


def test_secret_key_references_match_the_templates():
    templates = {s["metadata"]["name"]: set(s.get("stringData", {})) for s in find(render(SECRETS), "Secret")}
    for target in TARGETS:
        for obj in render(target):
            for label, pod in pod_specs(obj):
                for _, container in containers(pod):
                    for env in container.get("env", []):
                        ref = env.get("valueFrom", {}).get("secretKeyRef")
                        if ref:
                            assert ref["key"] in templates[ref["name"]], f"{label}: {ref} not in the template"


def test_secrets_are_templates_without_values():
    for target in TARGETS:
        assert not find(render(target), "Secret"), f"k8s/{target} must not carry Secrets (k8s/secrets has templates)"
    secrets = find(render(SECRETS), "Secret")
    expected = {cluster.S3_SECRET: set(cluster.S3_SECRET_KEYS), cluster.MLFLOW_SECRET: set(cluster.MLFLOW_SECRET_KEYS),
                cluster.TORCHSERVE_TOKEN_SECRET: set(cluster.TORCHSERVE_TOKEN_KEYS), cluster.POSTGRES_SECRET: set(cluster.POSTGRES_SECRET_KEYS),
                cluster.MLFLOW_SERVER_SECRET: set(cluster.MLFLOW_SERVER_SECRET_KEYS)}
    assert {s["metadata"]["name"]: set(s["stringData"]) for s in secrets} == expected
    for secret in secrets:
        assert "data" not in secret, f"{secret['metadata']['name']}: base64 data would hide a real value"
        assert set(secret["stringData"].values()) == {"REPLACE_ME"}, secret["metadata"]["name"]
    # Nothing in the source tree looks like a committed credential either.
    for path in K8S.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?i)(password|secret_access_key|token)\s*[:=]\s*['\"]?(?!REPLACE_ME)[A-Za-z0-9+/]{16,}",
                             text), f"{path}: looks like a real credential"


@pytest.mark.parametrize("url,service", [(cluster.S3_ENDPOINT_IN_CLUSTER, cluster.MINIO_SERVICE),
                                         (cluster.MLFLOW_URI_IN_CLUSTER, cluster.MLFLOW_SERVICE),
                                         (cluster.TORCHSERVE_MANAGEMENT_IN_CLUSTER, cluster.TORCHSERVE_SERVICE)])
@pytest.mark.parametrize("target", TARGETS)
def test_in_cluster_urls_of_cluster_py_resolve_to_services(target, url, service):
    parsed = urlparse(url)
    assert parsed.hostname == f"{service}.{cluster.NAMESPACE}.svc.cluster.local"
    svc = one(render(target), "Service", service)
    assert svc["spec"]["type"] == "ClusterIP", f"{service} must stay cluster-internal"
    assert parsed.port in {p["port"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize("target", TARGETS)
def test_images_of_cluster_py_are_the_ones_deployed(target):
    images = {c["image"] for o in render(target) for _, pod in pod_specs(o) for _, c in containers(pod)}
    assert COMPONENT_IMAGE in images and cluster.TORCHSERVE_IMAGE in images
    if target == "overlays/gpu":
        assert COMPONENT_IMAGE_GPU in images
    ours = {i for i in images if i.startswith(cluster.IMAGE_REPOSITORY)}
    assert ours <= {COMPONENT_IMAGE, COMPONENT_IMAGE_GPU, cluster.TORCHSERVE_IMAGE}, ours


def test_bucket_job_creates_every_bucket():
    job = one(render("base"), "Job", "minio-buckets")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert {cluster.DATA_BUCKET, cluster.MODEL_STORE_BUCKET, cluster.MLFLOW_ARTIFACTS_BUCKET} <= set(command)


def test_pipeline_service_account_has_a_narrow_role():
    objects = render("base")
    one(objects, "ServiceAccount", cluster.PIPELINE_SERVICE_ACCOUNT)
    binding = one(objects, "RoleBinding", cluster.PIPELINE_SERVICE_ACCOUNT)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": cluster.PIPELINE_SERVICE_ACCOUNT,
                                    "namespace": cluster.NAMESPACE}]
    role = one(objects, binding["roleRef"]["kind"], binding["roleRef"]["name"])
    assert binding["roleRef"]["kind"] == "Role" and not find(objects, "ClusterRoleBinding")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert "secrets" not in rule["resources"], "pipeline pods get credentials as env, never via the API"


def _config_properties(objects: list[dict]) -> dict[str, str]:
    configmap = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("torchserve-config"))
    lines = configmap["data"]["config.properties"].splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


NO_MESH = tuple(target for target in TARGETS if target != "overlays/istio")


def _torchserve_pod(objects: list[dict]) -> dict:
    return one(objects, "Deployment", cluster.TORCHSERVE_SERVICE)["spec"]["template"]["spec"]


@pytest.mark.parametrize("target", NO_MESH)
def test_without_a_mesh_the_nginx_edge_is_the_only_way_in(target):
    """TorchServe listens on the pod's loopback (its own token check off); the edge container, nginx with
    the template tests/k8s/test_edge.py runs, listens on the Service's ports, takes both tokens from the
    Secret and forwards to exactly those loopback addresses."""
    objects = render(target)
    properties = _config_properties(objects)
    assert properties["disable_token_authorization"] == "true"
    assert properties["enable_envvars_config"] == "false" and properties["install_py_dep_per_model"] == "false"
    assert properties["disable_system_metrics"] == "true" and properties["async_logging"] == "true"
    for api in ("inference_address", "management_address"):
        assert urlparse(properties[api]).hostname == "127.0.0.1", f"TorchServe {api} must be loopback-only"
    assert properties["grpc_inference_address"] == properties["grpc_management_address"] == "127.0.0.1"
    pod = _torchserve_pod(objects)
    edge = next(c for c in pod["containers"] if c["name"] == "edge")
    assert edge["image"].startswith("docker.io/nginxinc/nginx-unprivileged:")
    env = {e["name"]: e.get("value") for e in edge["env"]}
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in edge["env"] if "valueFrom" in e}
    assert secrets == {"FER_INFERENCE_TOKEN": {"name": cluster.TORCHSERVE_TOKEN_SECRET, "key": "token"},
                       "FER_MANAGEMENT_TOKEN": {"name": cluster.TORCHSERVE_TOKEN_SECRET, "key": "management-token"}}
    assert {env["FER_TORCHSERVE_INFERENCE"], env["FER_TORCHSERVE_MANAGEMENT"]} == {
        urlparse(properties[a]).netloc for a in ("inference_address", "management_address")}
    assert int(env["FER_MAX_BODY_BYTES"]) == int(properties["max_request_size"])
    ports = {p["name"]: p["containerPort"] for p in edge["ports"]}
    assert ports == {"inference": int(env["FER_EDGE_INFERENCE_PORT"]), "management": int(env["FER_EDGE_MANAGEMENT_PORT"])}
    service_ports = {p["name"]: p["port"] for p in one(objects, "Service", cluster.TORCHSERVE_SERVICE)["spec"]["ports"]}
    assert service_ports["management"] == urlparse(cluster.TORCHSERVE_MANAGEMENT_IN_CLUSTER).port == ports["management"]
    assert service_ports["inference"] == ports["inference"]
    template = next(v for v in pod["volumes"] if v["name"] == "edge-template")["configMap"]
    assert template["items"] == [{"key": "torchserve-edge.conf.template", "path": "default.conf.template"}]
    mounts = {m["name"]: m["mountPath"] for m in edge["volumeMounts"]}
    assert mounts["edge-template"] == "/etc/nginx/templates" and mounts["edge-conf"] == env["NGINX_ENVSUBST_OUTPUT_DIR"]
    assert edge["readinessProbe"]["httpGet"]["path"] == "/healthz"
    init = pod["initContainers"][0]
    assert f"s3://{cluster.MODEL_STORE_BUCKET}" in init["command"]
    assert properties["model_store"] in {m["mountPath"] for m in init["volumeMounts"]}


def test_behind_istio_the_mesh_guards_each_port():
    """k8s/overlays/istio: no nginx, TorchServe on the pod's ports, STRICT mTLS, JWTs of the cluster's
    issuer, and per port who may call: apps (or a valid JWT) on inference, the pipeline's service
    account on management, the monitoring namespace on metrics."""
    objects = render("overlays/istio")
    properties = _config_properties(objects)
    assert properties["disable_token_authorization"] == "true"
    assert urlparse(properties["inference_address"]).port == 8080 and urlparse(properties["management_address"]).port == 8081
    pod = _torchserve_pod(objects)
    assert [c["name"] for c in pod["containers"]] == ["torchserve"]
    assert not [v for v in pod["volumes"] if v["name"].startswith("edge")]
    assert not [o for o in find(objects, "ConfigMap") if o["metadata"]["name"].startswith("torchserve-edge")]
    deployment = one(objects, "Deployment", cluster.TORCHSERVE_SERVICE)
    assert deployment["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert one(objects, "Namespace", cluster.NAMESPACE)["metadata"]["labels"]["istio-injection"] == "enabled"
    ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert ports == {"inference": 8080, "management": 8081, "metrics": 8082}
    selector = {"matchLabels": {"app.kubernetes.io/name": cluster.TORCHSERVE_SERVICE}}
    peer = one(objects, "PeerAuthentication", "torchserve-mtls")["spec"]
    assert peer == {"selector": selector, "mtls": {"mode": "STRICT"}}
    [jwt] = one(objects, "RequestAuthentication", "torchserve-cluster-jwt")["spec"]["jwtRules"]
    assert jwt["issuer"] == "https://kubernetes.default.svc.cluster.local"
    policy = one(objects, "AuthorizationPolicy", "torchserve-ports")["spec"]
    assert policy["selector"] == selector and policy["action"] == "ALLOW"
    by_port = {rule["to"][0]["operation"]["ports"][0]: rule["from"] for rule in policy["rules"]}
    assert set(by_port) == {"8080", "8081", "8082"}
    assert {"requestPrincipals": [f"{jwt['issuer']}/*"]} in [peer["source"] for peer in by_port["8080"]]
    assert [peer["source"] for peer in by_port["8081"]] == [
        {"principals": [f"cluster.local/ns/{cluster.NAMESPACE}/sa/{cluster.PIPELINE_SERVICE_ACCOUNT}"]}]
    assert [peer["source"] for peer in by_port["8082"]] == [{"namespaces": ["monitoring"]}]
    # NetworkPolicies stay as the second layer
    assert find(objects, "NetworkPolicy", "torchserve-management-ingress")


def _ingress_sources(objects: list[dict], app: str, port: int) -> list[dict]:
    """Every `from` peer of every NetworkPolicy that opens `port` on pods of app `app`."""
    peers = []
    for policy in find(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector and selector.get("app.kubernetes.io/name") != app:
            continue
        for rule in policy["spec"].get("ingress", []):
            if any(p.get("port") == port for p in rule.get("ports", [])) or not rule.get("ports"):
                peers += rule.get("from", [{"everyone": True}])
    return peers


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies_keep_management_and_database_internal(target):
    objects = render(target)
    deny = one(objects, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]
    key, value = cluster.PIPELINE_POD_LABEL
    ns_key, ns_value = cluster.PIPELINE_NAMESPACE_LABEL
    management = _ingress_sources(objects, cluster.TORCHSERVE_SERVICE, urlparse(cluster.TORCHSERVE_MANAGEMENT_IN_CLUSTER).port)
    assert management and all(peer.get("podSelector", {}).get("matchLabels") == {key: value} for peer in management)
    # a pod label alone is not enough: the namespace must be one labelled for pipelines
    assert all(peer.get("namespaceSelector", {}).get("matchLabels") == {ns_key: ns_value} for peer in management)
    namespace = one(objects, "Namespace", cluster.NAMESPACE)
    assert namespace["metadata"]["labels"][ns_key] == ns_value
    for app, port in ((cluster.MLFLOW_SERVICE, 5000), ("minio", 9000)):
        for peer in _ingress_sources(objects, app, port):
            assert "namespaceSelector" not in peer or peer["namespaceSelector"].get("matchLabels") == {ns_key: ns_value}
    metrics_key, metrics_value = cluster.METRICS_NAMESPACE_LABEL
    assert _ingress_sources(objects, cluster.TORCHSERVE_SERVICE, 8082) == [
        {"namespaceSelector": {"matchLabels": {metrics_key: metrics_value}}}]
    database = _ingress_sources(objects, cluster.POSTGRES_SERVICE, 5432)
    assert database == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": cluster.MLFLOW_SERVICE}}}]
    for svc in find(objects, "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{svc['metadata']['name']} is exposed"


def test_mlflow_server_uses_postgres_s3_and_allowed_hosts():
    pod = one(render("base"), "Deployment", cluster.MLFLOW_SERVICE)["spec"]["template"]["spec"]
    script = pod["containers"][0]["args"][0]
    assert "--backend-store-uri \"postgresql://" in script
    assert f"--artifacts-destination s3://{cluster.MLFLOW_ARTIFACTS_BUCKET}" in script
    hosts = re.search(r'--allowed-hosts "([^"]+)"', script).group(1).split(",")
    assert urlparse(cluster.MLFLOW_URI_IN_CLUSTER).netloc in hosts and "localhost:*" in hosts
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == cluster.S3_ENDPOINT_IN_CLUSTER
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == cluster.MLFLOW_SECRET


def test_local_overlay_fits_one_node():
    objects = render("overlays/local")
    hpa = one(objects, "HorizontalPodAutoscaler", cluster.TORCHSERVE_SERVICE)
    assert hpa["spec"]["minReplicas"] == 1
    assert all(o["spec"].get("replicas", 1) == 1 for o in find(objects, "Deployment") + find(objects, "StatefulSet"))
    assert one(render("base"), "HorizontalPodAutoscaler", cluster.TORCHSERVE_SERVICE)["spec"]["minReplicas"] >= 2


def test_gpu_overlay_pytorchjob_runs_fer_train_under_torchrun_on_gpu_nodes():
    job = one(render("overlays/gpu"), "PyTorchJob", "fer-train-ddp")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    assert replicas["Master"]["template"] == replicas["Worker"]["template"], "Master and Worker must run the same pod"
    nodes = replicas["Master"]["replicas"] + replicas["Worker"]["replicas"]
    label_key, label_value = cluster.GPU_NODE_LABEL
    for role, replica in replicas.items():
        assert replica["restartPolicy"] in ("OnFailure", "Never", "ExitCode")
        pod = replica["template"]["spec"]
        assert pod["nodeSelector"] == {label_key: label_value}
        assert any(t["key"] == cluster.GPU_TOLERATION_KEY and t["effect"] == "NoSchedule" for t in pod["tolerations"])
        (trainer,) = [c for c in pod["containers"] if c["name"] == "pytorch"]  # the operator's required name
        assert trainer["image"] == COMPONENT_IMAGE_GPU
        gpus = trainer["resources"]["limits"][cluster.GPU_RESOURCE]
        assert gpus >= 1 and trainer["resources"]["requests"][cluster.GPU_RESOURCE] == gpus
        env = {e["name"]: e.get("value") for e in trainer["env"]}
        assert int(env["FER_NNODES"]) == nodes, f"{role}: FER_NNODES must equal Master + Worker replicas"
        assert int(env["FER_NPROC_PER_NODE"]) == gpus
        command = " ".join(trainer["command"])
        assert re.search(r"torchrun .*--rdzv-endpoint=\"\$\{MASTER_ADDR\}:\$\{MASTER_PORT\}\".* --no-python fer train ",
                         command), command
        assert env["MLFLOW_TRACKING_URI"] == cluster.MLFLOW_URI_IN_CLUSTER
        data_dir = command.split("--data ")[1].split()[0]
        sync = pod["initContainers"][0]["command"]
        assert f"s3://{cluster.DATA_BUCKET}/prepared" in sync and data_dir in sync
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"]), "no /dev/shm for DataLoader"


def test_deploy_doc_creates_every_secret_the_templates_list():
    doc = (K8S.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    for secret in find(render(SECRETS), "Secret"):
        name = secret["metadata"]["name"]
        command = re.search(rf"create secret generic {name} \\\n((?:\s+--from-literal=.+\n)+)", doc)
        assert command, f"docs/deploy.md does not show `kubectl create secret generic {name}`"
        keys = set(re.findall(r"--from-literal=([A-Za-z_-]+)=", command.group(1)))
        assert keys == set(secret["stringData"]), f"docs/deploy.md: {name} keys {keys}"
