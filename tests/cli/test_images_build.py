"""`fer images build`'s command line: the host pip's settings reach the build (local folders mounted
read-only with podman), torch comes from a local index that holds it, each image is labelled with the
digest of the code it is built from. The builds themselves run in the container tier (tests/containers/)."""

from __future__ import annotations

from pathlib import Path

from fer_cli import images
from fer_core import cluster


def _index(root: Path, *projects: str) -> str:
    for project in projects:
        (root / "simple" / project).mkdir(parents=True)
    (root / "files").mkdir()
    return f"file://{root}/simple"


def _args(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, item in enumerate(command) if item == flag]


def test_the_build_takes_the_host_pips_indexes_and_torch_from_the_local_index_that_holds_it(tmp_path):
    plain, with_torch = _index(tmp_path / "plain", "six"), _index(tmp_path / "more", "torch", "torchvision")
    cert = tmp_path / "ca.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = {"PIP_EXTRA_INDEX_URL": f"{plain} {with_torch}", "PIP_CERT": str(cert),
                "PIP_INDEX_URL": "https://pypi.example.org/simple"}
    torch = images.torch_index(settings)
    assert torch == with_torch
    image = images.images()["component"]
    command = images.build_command("podman", image, "localhost/base:1", settings, torch)
    build_args = dict(arg.split("=", 1) for arg in _args(command, "--build-arg"))
    assert build_args == {"PYTHON_IMAGE": "localhost/base:1", "VARIANT": "cpu", "TORCH_INDEX_URL": with_torch,
                          "PIP_EXTRA_INDEX_URL": f"{plain} {with_torch}", "PIP_CERT": "/run/fer-build/ca.crt",
                          "PIP_INDEX_URL": "https://pypi.example.org/simple"}
    # an index's pages link to ../../files/: its whole folder is mounted, read-only, once
    assert sorted(_args(command, "-v")) == sorted([f"{tmp_path / 'plain'}:{tmp_path / 'plain'}:ro",
                                                   f"{tmp_path / 'more'}:{tmp_path / 'more'}:ro",
                                                   f"{cert}:/run/fer-build/ca.crt:ro"])
    assert _args(command, "--label") == [f"{cluster.SOURCE_LABEL}={cluster.source_digest()}"]
    assert _args(command, "-t") == [f"{cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}"]
    assert command[-1] == str(images.REPO)


def test_docker_builds_get_no_local_folders_and_the_torchserve_image_builds_on_the_component_image(tmp_path):
    settings = {"PIP_EXTRA_INDEX_URL": _index(tmp_path / "more", "torch"), "PIP_INDEX_URL": "https://pypi.example.org/simple"}
    component = images.build_command("docker", images.images()["component"], "python:3.11-slim-bookworm", settings,
                                     None)
    build_args = dict(arg.split("=", 1) for arg in _args(component, "--build-arg"))
    assert "-v" not in component and "PIP_EXTRA_INDEX_URL" not in build_args   # docker build mounts nothing
    assert build_args["PIP_INDEX_URL"] == "https://pypi.example.org/simple"
    # the TorchServe image installs nothing: it takes only the component image (the arguments it declares)
    torchserve = images.build_command("podman", images.images()["torchserve"], "localhost/base:1", settings, None)
    assert dict(arg.split("=", 1) for arg in _args(torchserve, "--build-arg")) == {
        "COMPONENT_IMAGE": f"{cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}"}
    assert "-v" not in torchserve and _args(torchserve, "-t") == [cluster.TORCHSERVE_IMAGE]
    assert images.torch_index({"PIP_EXTRA_INDEX_URL": "https://example.org/simple"}) is None


def test_the_source_digest_follows_the_code_the_images_copy(tmp_path):
    for package in cluster.IMAGE_PACKAGES:
        (tmp_path / package / "tests").mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    first = cluster.source_digest(tmp_path)
    (tmp_path / "fer_core" / "tests" / "test_x.py").write_text("assert True\n")   # tests are not in the image
    assert cluster.source_digest(tmp_path) == first
    (tmp_path / "components" / "__init__.py").write_text("X = 1\n")
    second = cluster.source_digest(tmp_path)
    assert second != first
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile.component").write_text("FROM scratch\n")   # a changed build, too
    assert cluster.source_digest(tmp_path) != second


def test_a_torch_index_given_alone_is_mounted_for_the_build(tmp_path):
    torch = _index(tmp_path / "torch-index", "torch")
    command = images.build_command("podman", images.images()["component"], "localhost/base:1", {}, torch)
    assert _args(command, "-v") == [f"{tmp_path / 'torch-index'}:{tmp_path / 'torch-index'}:ro"]
    assert f"TORCH_INDEX_URL={torch}" in _args(command, "--build-arg")
