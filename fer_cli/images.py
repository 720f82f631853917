"""`fer images build | pin`: the project's container images, built from docker/ with podman or docker.

`make images` runs `fer images build`: the component image (docker/Dockerfile.component, CPU variant)
then the TorchServe image (docker/Dockerfile.torchserve, built on the component image), tagged as k8s/ and fer_core/cluster.py name them. Build arguments:
- the base: --base, else $FER_BASE_IMAGE, else python:3.11-slim-bookworm when the engine can pull it,
  else a local Debian 12 base made by docker/scripts/debian-base.sh (machines without Docker Hub);
- the package index: the host's pip settings (index-url, extra-index-url, cert) are handed to the
  build, local folders among them mounted read-only (podman), so a machine behind a mirror builds as
  its pip installs; torch comes from --torch-index-url, else a local index of the host's pip that
  holds torch, else PyTorch's CPU index (the Dockerfile's default).
Sizes and build times are printed and kept in $FER_HOME/images.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import click

from fer_cli.common import fail

REPO = Path(__file__).resolve().parents[1]
PUBLIC_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "localhost/fer-debian:bookworm"


def engine_name(engine: str | None) -> str:
    if engine:
        if not shutil.which(engine):
            fail(f"--engine {engine}: not found on PATH", code=2)
        return engine
    for name in ("docker", "podman"):   # as the Makefile and the docker runner: a running Docker engine first
        if shutil.which(name) and _works(name):
            return name
    fail("neither podman nor a running Docker engine was found: `make images` installs and configures podman "
         "(docker/scripts/podman-setup.sh)")


def _works(engine: str) -> bool:
    return subprocess.run([engine, "info"], capture_output=True, timeout=60).returncode == 0


def images() -> dict[str, dict]:
    """What `fer images build` builds: tag, Dockerfile, and the build arguments of its own."""
    from fer_core import cluster

    component = f"{cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}"
    return {
        "component": {"tag": component, "dockerfile": "docker/Dockerfile.component", "args": {"VARIANT": "cpu"}},
        "torchserve": {"tag": cluster.TORCHSERVE_IMAGE, "dockerfile": "docker/Dockerfile.torchserve",
                       "args": {"COMPONENT_IMAGE": component}},
    }


def host_pip_settings() -> dict[str, str]:
    """The host pip's index-url, extra-index-url and cert (`pip config list`, then $PIP_*), as PIP_* names."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in ("index-url", "extra-index-url", "cert"):
            settings.setdefault("PIP_" + name.replace("-", "_").upper(), value.strip().strip("'\""))
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT"):
        if os.environ.get(name):
            settings[name] = os.environ[name]
    return settings


def _local_paths(value: str) -> list[str]:
    """The local folders and files a pip setting names (file:// URLs or plain paths); for an index's
    `.../simple` folder its parent, where such indexes keep the files their pages link to."""
    paths = []
    for item in value.split():
        path = urlparse(item).path if item.startswith("file:") else item
        if path.startswith("/") and os.path.exists(path):
            paths.append(str(Path(path).parent) if Path(path).name == "simple" else path)
    return paths


def torch_index(settings: dict[str, str]) -> str | None:
    """A local index among the host pip's that holds torch (PEP 503 layout), else None."""
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        for item in settings.get(key, "").split():
            if item.startswith("file:") and (Path(urlparse(item).path) / "torch").is_dir():
                return item
    return None


def build_command(engine: str, image: dict, base: str, settings: dict[str, str], torch_index_url: str | None
                  ) -> list[str]:
    args = {"PYTHON_IMAGE": base, **image["args"]}
    if torch_index_url:
        args["TORCH_INDEX_URL"] = torch_index_url
    mounts: list[str] = []
    for key, value in settings.items():
        local = _local_paths(value)
        if local and engine != "podman":
            continue   # docker build mounts nothing: a local index or CA file cannot reach the build
        if key == "PIP_CERT" and local:
            mounts += ["-v", f"{local[0]}:/run/fer-build/ca.crt:ro"]
            args[key] = "/run/fer-build/ca.crt"
            continue
        mounts += [arg for path in local for arg in ("-v", f"{path}:{path}:ro")]
        args[key] = value
    if torch_index_url and engine == "podman":
        for path in _local_paths(torch_index_url):
            if f"{path}:{path}:ro" not in mounts:
                mounts += ["-v", f"{path}:{path}:ro"]
    declared = set(re.findall(r"^ARG (\w+)", (REPO / image["dockerfile"]).read_text(encoding="utf-8"), re.M))
    args = {key: value for key, value in args.items() if key in declared}
    if not declared & (set(settings) | {"TORCH_INDEX_URL"}):
        mounts = []    # a Dockerfile that installs nothing (the TorchServe image) needs no index
    from fer_core import cluster

    return [engine, "build", "--network", "host", "-f", str(REPO / image["dockerfile"]), "-t", image["tag"],
            "--label", f"{cluster.SOURCE_LABEL}={cluster.source_digest(REPO)}", *mounts,
            *[arg for key, value in args.items() for arg in ("--build-arg", f"{key}={value}")], str(REPO)]


def choose_base(engine: str, base: str | None) -> str:
    base = base or os.environ.get("FER_BASE_IMAGE")
    if base:
        return base
    if _exists(engine, PUBLIC_BASE) or subprocess.run([engine, "pull", "-q", PUBLIC_BASE], capture_output=True,
                                                       timeout=600).returncode == 0:
        return PUBLIC_BASE
    if engine != "podman":
        fail(f"{engine} cannot pull {PUBLIC_BASE}: give a base image with --base (Debian-based, python3 3.11)")
    click.echo(f"{PUBLIC_BASE} cannot be pulled here: building a local Debian 12 base ({LOCAL_BASE})")
    subprocess.run([str(REPO / "docker/scripts/debian-base.sh"), LOCAL_BASE], check=True)
    return LOCAL_BASE


def _exists(engine: str, image: str) -> bool:
    return subprocess.run([engine, "image", "inspect", image], capture_output=True).returncode == 0


def inspect(engine: str, image: str) -> dict:
    out = subprocess.run([engine, "image", "inspect", image], capture_output=True, text=True, check=True).stdout
    info = json.loads(out)[0]
    return {"id": info["Id"], "size_bytes": int(info["Size"]), "digest": info.get("Digest") or ""}


@click.group()
def images_group() -> None:
    """Build the project's container images and pin their digests in k8s/."""


@images_group.command()
@click.option("--engine", type=click.Choice(["podman", "docker"]), default=None,
              help="Container engine (default: a running Docker engine, else podman).")
@click.option("--base", default=None, help=f"Base image (default $FER_BASE_IMAGE, else {PUBLIC_BASE} when it can be "
                                            f"pulled, else a local Debian 12 base).")
@click.option("--torch-index-url", default=None,
              help="Where torch comes from (default: a local index of the host's pip holding torch, else PyTorch's "
                   "CPU index).")
@click.option("--only", type=click.Choice(["component", "torchserve"]), default=None, help="Build one image.")
def build(engine, base, torch_index_url, only) -> None:
    """Build the component and TorchServe images from docker/ (the same Dockerfiles users build)."""
    if not (REPO / "docker" / "Dockerfile.component").is_file():
        fail(f"{REPO} is not a checkout of the project (docker/ is missing): build from a clone")
    from fer_core.home import fer_home

    engine = engine_name(engine)
    base = choose_base(engine, base)
    settings = host_pip_settings()
    torch_index_url = torch_index_url or torch_index(settings)
    record_path = fer_home() / "images.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for name, image in images().items():
        if only and name != only:
            continue
        command = build_command(engine, image, base, settings, torch_index_url)
        built_on = image["args"].get("COMPONENT_IMAGE", base)   # the TorchServe image is built on the component's
        click.echo(f"building {image['tag']} ({image['dockerfile']}, on {built_on})")
        started = time.monotonic()
        if subprocess.run(command).returncode != 0:
            fail(f"building {image['tag']} failed (command: {' '.join(command)})")
        seconds = time.monotonic() - started
        info = inspect(engine, image["tag"])
        record[name] = {"tag": image["tag"], "engine": engine, "base": built_on, "build_seconds": round(seconds, 1),
                        **info}
        click.echo(f"built {image['tag']}: {info['size_bytes'] / 1e9:.2f} GB in {seconds / 60:.1f} min "
                   f"(image {info['id'][:12]})")
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    click.echo(f"record: {record_path}")


@images_group.command()
@click.option("--engine", type=click.Choice(["podman", "docker"]), default=None,
              help="Container engine to ask (default: a running Docker engine, else podman).")
@click.option("--digest", "given", multiple=True, metavar="REPOSITORY=sha256:...",
              help="Pin this digest instead of asking the engine (what `podman push --digestfile` or `docker push` "
                   "wrote for a pushed image). Repeatable.")
def pin(engine, given) -> None:
    """Pin the built images' digests into k8s/'s kustomizations (`digest:` of their `images:` entries).

    The manifests then name REPOSITORY:TAG@DIGEST and `fer pipeline compile` pins the components to the
    same bytes. Without --digest, the digest the engine holds for each tag `fer images build` made is
    used; pin again after pushing when the registry gives another (docs/deploy.md)."""
    from fer_core import cluster

    digests: dict[str, str] = {}
    for item in given:
        repository, sep, digest = item.partition("=")
        if not sep:
            fail(f"--digest {item!r}: expected REPOSITORY=sha256:...", code=2)
        digests[repository] = digest.strip()
    if not given:
        engine = engine_name(engine)
        for image in images().values():
            if not _exists(engine, image["tag"]):
                fail(f"{image['tag']} is not built here: run `make images` (or `fer images build`) first")
            digest = inspect(engine, image["tag"])["digest"]
            if not digest:
                fail(f"{engine} reports no digest for {image['tag']}: push it and pin with --digest")
            digests[image["tag"].rsplit(":", 1)[0]] = digest
    try:
        changed = cluster.pin_digests(digests)
    except ValueError as exc:
        fail(str(exc), code=2)
    for repository, digest in digests.items():
        click.echo(f"pinned {repository}@{digest}")
    click.echo(f"changed: {', '.join(str(path) for path in changed)}")
