"""Images pinned by digest: a `digest:` in the kustomizations' `images:` entries pins both the rendered
manifests (`kubectl kustomize`) and the compiled pipeline's components to the same bytes; a release
compile (`--require-digests`) refuses tags alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fer_core import cluster

REPO = Path(__file__).resolve().parents[2]
CPU = "sha256:" + "a" * 64
TORCHSERVE = "sha256:" + "b" * 64
GPU = "sha256:" + "c" * 64
EDGE_IMAGE = "docker.io/nginxinc/nginx-unprivileged"   # the no-mesh edge in front of TorchServe (nginx)
EDGE = "sha256:" + "e" * 64


def _pinned_k8s(tmp_path: Path) -> Path:
    """A copy of k8s/ with each of our images' entries given a digest, as a release would."""
    k8s = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", k8s)
    for relative, digests in (("base/kustomization.yaml", {cluster.IMAGE_REPOSITORY: CPU,
                                                            f"{cluster.IMAGE_REPOSITORY}-torchserve": TORCHSERVE,
                                                            EDGE_IMAGE: EDGE}),
                              ("overlays/gpu/kustomization.yaml", {cluster.IMAGE_REPOSITORY_GPU: GPU})):
        path = k8s / relative
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for entry in document["images"]:
            entry["digest"] = digests[entry["name"]]
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return k8s


def _compile(out: Path, *args: str, k8s: Path | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FER_COMPONENT_IMAGE")}
    if k8s is not None:
        env["FER_K8S_DIR"] = str(k8s)
    return subprocess.run([str(Path(sys.executable).parent / "fer"), "pipeline", "compile", "--out", str(out), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def _executor_images(package: Path) -> dict[str, str]:
    spec = next(yaml.safe_load_all(package.read_text(encoding="utf-8")))
    return {name: executor["container"]["image"] for name, executor in spec["deploymentSpec"]["executors"].items()}


def test_digests_are_read_from_the_kustomizations(tmp_path):
    k8s = _pinned_k8s(tmp_path)
    tag = cluster.IMAGE_TAG
    edge_tag = next(entry["newTag"] for entry in yaml.safe_load((REPO / "k8s/base/kustomization.yaml").read_text())
                    ["images"] if entry["name"] == EDGE_IMAGE)
    assert cluster.image_digests(k8s) == {f"{cluster.IMAGE_REPOSITORY}:{tag}": CPU,
                                          f"{cluster.IMAGE_REPOSITORY}-torchserve:{tag}": TORCHSERVE,
                                          f"{cluster.IMAGE_REPOSITORY_GPU}:{tag}": GPU,
                                          f"{EDGE_IMAGE}:{edge_tag}": EDGE}
    assert cluster.image_digests(REPO / "k8s") == {}       # the checkout pins tags only until a release
    assert cluster.pinned("x/y:1@sha256:" + "d" * 64, {"x/y:1": CPU}).endswith("d" * 64)  # an explicit one wins


def test_a_malformed_digest_is_refused_naming_the_file(tmp_path):
    k8s = _pinned_k8s(tmp_path)
    path = k8s / "overlays/gpu/kustomization.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(GPU, "sha256:abc"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"overlays/gpu/kustomization\.yaml.*fer-cuda.*sha256:abc"):
        cluster.image_digests(k8s)


def test_manifests_and_pipeline_run_the_same_pinned_images(tmp_path):
    k8s = _pinned_k8s(tmp_path)
    result = _compile(tmp_path / "pipeline.yaml", "--require-digests", k8s=k8s)
    assert result.returncode == 0, result.stderr
    assert "pinned by tag" not in result.stderr
    images = _executor_images(tmp_path / "pipeline.yaml")
    tag = cluster.IMAGE_TAG
    assert images.pop("exec-train") == f"{cluster.IMAGE_REPOSITORY_GPU}:{tag}@{GPU}"
    assert set(images.values()) == {f"{cluster.IMAGE_REPOSITORY}:{tag}@{CPU}"}
    rendered = subprocess.run(["kubectl", "kustomize", str(k8s / "overlays/gpu")], capture_output=True, text=True,
                              check=True, timeout=120).stdout
    ours = {line.split("image:", 1)[1].strip() for line in rendered.splitlines()
            if "image:" in line and "fer-mlops" in line}
    assert ours == {f"{cluster.IMAGE_REPOSITORY}:{tag}@{CPU}", f"{cluster.IMAGE_REPOSITORY_GPU}:{tag}@{GPU}",
                    f"{cluster.IMAGE_REPOSITORY}-torchserve:{tag}@{TORCHSERVE}"}


def test_a_release_compile_refuses_images_pinned_by_tag_only(tmp_path):
    refused = _compile(tmp_path / "release.yaml", "--require-digests")
    assert refused.returncode == 2
    assert f"{cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}" in refused.stderr
    assert f"{cluster.IMAGE_REPOSITORY_GPU}:{cluster.IMAGE_TAG}" in refused.stderr
    assert "k8s/base/kustomization.yaml" in refused.stderr
    assert not (tmp_path / "release.yaml").exists()         # nothing half-written
    noted = _compile(tmp_path / "dev.yaml")                  # a development compile goes on, with a note
    assert noted.returncode == 0 and "note: images pinned by tag, not digest" in noted.stderr


def test_a_release_submit_refuses_images_pinned_by_tag_only_before_contacting_the_host(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("FER_COMPONENT_IMAGE")}
    package = tmp_path / "release.yaml"
    refused = subprocess.run([str(Path(sys.executable).parent / "fer"), "pipeline", "submit", "--host",
                              "http://127.0.0.1:9", "--source", "s3://datasets/raf-db", "--package", str(package),
                              "--require-digests"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert refused.returncode == 2, refused.stderr
    assert f"{cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}" in refused.stderr
    assert "submitting" not in refused.stderr and "127.0.0.1:9" not in refused.stderr
    assert not package.exists()


def test_a_malformed_digest_fails_compiling_not_other_commands(tmp_path):
    k8s = _pinned_k8s(tmp_path)
    path = k8s / "base" / "kustomization.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(CPU, "sha256:not-a-digest"), encoding="utf-8")
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("FER_COMPONENT_IMAGE")},
           "FER_K8S_DIR": str(k8s)}
    code = "import fer_core.cluster as c; print(c.NAMESPACE)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert other.returncode == 0 and other.stdout.strip() == cluster.NAMESPACE, other.stderr
    refused = _compile(tmp_path / "pipeline.yaml", k8s=k8s)
    assert refused.returncode == 2 and "sha256:not-a-digest" in refused.stderr and str(path) in refused.stderr
    assert "Traceback" not in refused.stderr


def _fer_images_pin(k8s: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FER_K8S_DIR": str(k8s)}
    return subprocess.run([str(Path(sys.executable).parent / "fer"), "images", "pin", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def test_fer_images_pin_writes_digests_the_manifests_and_the_compile_then_use(tmp_path):
    k8s = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", k8s)
    before = (k8s / "base/kustomization.yaml").read_text(encoding="utf-8")
    done = _fer_images_pin(k8s, "--digest", f"{cluster.IMAGE_REPOSITORY}={CPU}",
                           "--digest", f"{cluster.IMAGE_REPOSITORY}-torchserve={TORCHSERVE}",
                           "--digest", f"{cluster.IMAGE_REPOSITORY_GPU}={GPU}")
    assert done.returncode == 0, done.stderr
    after = (k8s / "base/kustomization.yaml").read_text(encoding="utf-8")
    # only the two digest lines are new: every comment and entry of the file stays
    assert [line for line in after.splitlines() if line not in before.splitlines()] == \
        [f"    digest: {CPU}", f"    digest: {TORCHSERVE}"]
    tag = cluster.IMAGE_TAG
    assert cluster.image_digests(k8s) == {f"{cluster.IMAGE_REPOSITORY}:{tag}": CPU,
                                          f"{cluster.IMAGE_REPOSITORY}-torchserve:{tag}": TORCHSERVE,
                                          f"{cluster.IMAGE_REPOSITORY_GPU}:{tag}": GPU}
    compiled = _compile(tmp_path / "pipeline.yaml", "--require-digests", k8s=k8s)
    assert compiled.returncode == 0, compiled.stderr
    # pinning again replaces the digest instead of adding a second one
    again = _fer_images_pin(k8s, "--digest", f"{cluster.IMAGE_REPOSITORY}={EDGE}")
    assert again.returncode == 0, again.stderr
    assert cluster.image_digests(k8s)[f"{cluster.IMAGE_REPOSITORY}:{tag}"] == EDGE
    lines = (k8s / "base/kustomization.yaml").read_text(encoding="utf-8").splitlines()
    assert sum(line.strip().startswith("digest: sha256:") for line in lines) == 2


@pytest.mark.parametrize("given, message", [
    (f"{cluster.IMAGE_REPOSITORY}=sha256:abc", "not sha256: and 64 hex digits"),
    (f"example.org/unknown={CPU}", "no kustomization"),
    (CPU, "expected REPOSITORY=sha256"),
])
def test_fer_images_pin_refuses_a_bad_digest_or_an_unknown_image_and_changes_nothing(tmp_path, given, message):
    k8s = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", k8s)
    done = _fer_images_pin(k8s, "--digest", given)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    for relative in cluster.KUSTOMIZATIONS:
        assert (k8s / relative).read_text(encoding="utf-8") == (REPO / "k8s" / relative).read_text(encoding="utf-8")
