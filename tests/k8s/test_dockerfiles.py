"""The Dockerfiles install exactly the versions pyproject.toml pins, as a non-root user.

These read the files (every `name==version` on a `pip install` line must be the pyproject pin, the
project itself is installed from its own pins, the final stage is non-root); tests/containers/ builds
and runs them. The TorchServe image installs nothing of its own: it copies the component image's
environment, so both run the same pins.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from fer_core import cluster

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))
INSTALLING = [path for path in DOCKERFILES if path.name != "Dockerfile.torchserve"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\"';]+)$")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins = {}
    for requirement in requirements:
        match = PIN.match(requirement.strip())
        assert match, f"pyproject.toml: {requirement!r} is not pinned with =="
        pins[_name(match.group(1))] = match.group(2)
    return pins


def instructions(path: Path) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return lines


def pip_pins(path: Path) -> dict[str, str]:
    pins = {}
    for instruction in instructions(path):
        if not instruction.startswith("RUN") or "pip install" not in instruction:
            continue
        for token in instruction.split():
            match = PIN.match(token.strip("\"'"))
            if match:
                pins[_name(match.group(1))] = match.group(2)
    return pins


def test_there_are_component_and_torchserve_dockerfiles():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.component", "Dockerfile.torchserve"}


@pytest.mark.parametrize("dockerfile", INSTALLING, ids=lambda p: p.name)
def test_dockerfile_pins_match_pyproject(dockerfile):
    pins, expected = pip_pins(dockerfile), pyproject_pins()
    assert {"torch", "torchvision"} <= set(pins), f"{dockerfile.name}: torch/torchvision must be pinned"
    for name, version in pins.items():
        assert name in expected, f"{dockerfile.name}: {name}=={version} is not pinned in pyproject.toml"
        assert version == expected[name], f"{dockerfile.name}: {name}=={version}, pyproject.toml pins {expected[name]}"


@pytest.mark.parametrize("dockerfile", INSTALLING, ids=lambda p: p.name)
def test_dockerfile_installs_the_project_from_its_pins_and_checks(dockerfile):
    """Every pin of pyproject.toml (dependencies and the cluster extra) from the file itself, then the
    project's own wheel without dependencies, then `pip check`."""
    steps = instructions(dockerfile)
    runs = [step for step in steps if step.startswith("RUN")]
    requirements = [r for r in runs if "tomllib" in r and "pip install -r" in r]
    assert requirements and "['dependencies']" in requirements[0] and "['cluster']" in requirements[0], dockerfile.name
    assert any("pip wheel --no-deps" in r and r.rstrip().endswith(" .") for r in runs), dockerfile.name
    project = [r for r in runs if "pip install --no-deps --no-index /tmp/wheels/" in r]
    assert project and "pip check" in project[0], f"{dockerfile.name}: run `pip check` after installing"
    copies = " ".join(step for step in steps if step.startswith("COPY"))
    for needed in ("pyproject.toml", "README.md", "fer_core", "fer_cli", "components", "pipelines"):
        assert needed in copies, f"{dockerfile.name}: the build needs {needed}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_non_root(dockerfile):
    steps = instructions(dockerfile)
    final = steps[max(i for i, s in enumerate(steps) if s.startswith("FROM")):]
    users = [s.split()[1] for s in final if s.startswith("USER ")]
    assert users, f"{dockerfile.name}: the final stage sets no USER (it would run as root)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile.name}: USER {users[-1]} must be a numeric non-root uid"
    assert not any(":latest" in s for s in steps if s.startswith("FROM") or s.startswith("ARG"))


def test_component_dockerfile_builds_cpu_and_cuda_variants():
    text = (REPO / "docker" / "Dockerfile.component").read_text(encoding="utf-8")
    assert "ARG VARIANT=cpu" in text and re.search(r"cuda\)\s+torch_index=https://download.pytorch.org/whl/cu", text)
    # The documented build commands produce exactly the image names the pipeline uses.
    assert f"-t {cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG} ." in text
    assert f"-t {cluster.IMAGE_REPOSITORY_GPU}:{cluster.IMAGE_TAG} ." in text
    assert f"-t {cluster.TORCHSERVE_IMAGE} ." in (REPO / "docker" / "Dockerfile.torchserve").read_text(encoding="utf-8")


def test_torchserve_image_ships_the_handlers_package_and_java():
    steps = instructions(REPO / "docker" / "Dockerfile.torchserve")
    # the handler imports fer_core: built on the component image, at the same pins, installing no Python
    assert f"ARG COMPONENT_IMAGE={cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}" in steps
    assert [step for step in steps if step.startswith("FROM")] == ["FROM ${COMPONENT_IMAGE}"]
    assert not any("pip install" in step for step in steps)
    assert any("openjdk-17" in step for step in steps)
    text = (REPO / "docker" / "Dockerfile.torchserve").read_text(encoding="utf-8")
    assert "gateway" not in text  # the edge in front of it is nginx or the mesh, never ours


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = set((REPO / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", ".fer"} <= ignored
    assert not {"docker", "fer_core", "fer_cli", "pyproject.toml", "README.md"} & ignored
