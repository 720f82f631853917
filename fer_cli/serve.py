"""`fer serve package | start | stop | status | predict | deploy`."""

from __future__ import annotations

import functools
import io
import json
import tempfile
from pathlib import Path

import click

from fer_cli.common import config_options, fail


def _server_options(func, *, listen: bool, store: bool = False):
    """Where TorchServe listens and keeps state; defaults from serve.* config and FER_HOME. `listen`:
    the start command's full set (bind address, every port, model store); else only what a client
    needs to reach a running server."""
    from fer_core.serving.server import ServerSettings

    address_help = ("Bind address (default serve.address, 127.0.0.1)." if listen
                    else "The server's address (default serve.address, 127.0.0.1).")
    options = [
        click.option("--address", default=None, help=address_help),
        click.option("--inference-port", type=int, default=None, help="Default serve.inference_port (8080)."),
        click.option("--management-port", type=int, default=None, help="Default serve.management_port (8081)."),
    ]
    if listen:
        options += [
            click.option("--metrics-port", type=int, default=None, help="Default serve.metrics_port (8082)."),
            click.option("--grpc-inference-port", type=int, default=None, help="Default serve.grpc_inference_port (7070)."),
            click.option("--grpc-management-port", type=int, default=None,
                         help="Default serve.grpc_management_port (7071)."),
        ]
    if listen or store:
        options.append(click.option("--model-store", type=click.Path(file_okay=False), default=None,
                                    help="Folder of .mar files (default FER_HOME/model_store)."))

    @functools.wraps(func)
    def wrapper(*args, config, address=None, inference_port=None, management_port=None, metrics_port=None,
                grpc_inference_port=None, grpc_management_port=None, model_store=None, **kwargs):
        settings = ServerSettings.from_config(config.serve, model_store=Path(model_store) if model_store else None,
                                              address=address, inference_port=inference_port,
                                              management_port=management_port, metrics_port=metrics_port,
                                              grpc_inference_port=grpc_inference_port,
                                              grpc_management_port=grpc_management_port)
        return func(*args, settings=settings, config=config, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def server_options(func):
    """The full set, for `fer serve start`."""
    return _server_options(func, listen=True)


def client_options(func):
    """Address and ports of a running server, for status and predict."""
    return _server_options(func, listen=False)


def deploy_options(func):
    """A running server's address and ports, and the model store it loads from."""
    return _server_options(func, listen=False, store=True)


@click.group()
def serve() -> None:
    """Package the champion for TorchServe, run TorchServe, and call it."""


@serve.command()
@click.option("--model-uri", default=None, help="Registry model, e.g. models:/fer-cbam-resnet@champion.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=None,
              help="Or a local run folder holding model.safetensors and meta.json.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Model store folder for the .mar (default FER_HOME/model_store).")
@click.option("--store", default=None, help="Also publish the .mar to this store (folder or s3://bucket/prefix).")
@click.option("--tracking-uri", default=None, help="MLflow tracking/registry URI (default $MLFLOW_TRACKING_URI "
              "or FER_HOME's sqlite).")
@config_options
def package(model_uri, run_dir, out_dir, store, tracking_uri, config) -> None:
    """Build a reproducible .mar (model.safetensors, handler, meta.json, model-config.yaml)."""
    from fer_core.home import fer_home
    from fer_core.serving.package import PackageError, build_mar, publish_mar, resolve_registry, resolve_run

    if bool(model_uri) == bool(run_dir):
        raise click.UsageError("give exactly one of --model-uri or --run")
    out_dir = Path(out_dir) if out_dir else fer_home() / "model_store"
    try:
        with tempfile.TemporaryDirectory(prefix="fer-download-") as download:
            source = resolve_registry(model_uri, download, tracking_uri) if model_uri else resolve_run(run_dir)
            mar = build_mar(source, out_dir, config.serve)
        published = publish_mar(mar, store) if store else None
    except (PackageError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    click.echo(json.dumps({"mar": str(mar), "model_name": config.serve.model_name,
                           "model_version": source.model_version, "source": source.origin,
                           "published": published}, indent=2))


def _newest_mar(store: Path, model_name: str) -> list[str]:
    archives = sorted(store.glob(f"{model_name}-*.mar"), key=lambda path: path.stat().st_mtime)
    return [archives[-1].name] if archives else []


@serve.command()
@click.option("--model", "models", multiple=True,
              help="A .mar in the model store to load (repeatable; default: the newest NAME-*.mar there).")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds to wait for /ping.")
@config_options
@server_options
def start(models, timeout, settings, config) -> None:
    """Start TorchServe (token auth on, loopback) unless it already runs; wait until healthy."""
    from fer_core.serving.client import ServeError
    from fer_core.serving.server import start_server

    load = list(models) or _newest_mar(settings.model_store, config.serve.model_name)
    try:
        result = start_server(settings, load, timeout=timeout)
    except ServeError as exc:
        fail(str(exc))
    if not result["started"]:
        click.echo(f"TorchServe already running (pid {result['pid']}); not starting another", err=True)
    click.echo(json.dumps(result, indent=2))


@serve.command()
@config_options
def stop(config) -> None:
    """Stop the TorchServe started by `fer serve start` (its workers too); FER_HOME says which."""
    from fer_core.serving.server import ServerSettings, stop_server

    click.echo("stopped" if stop_server(ServerSettings.from_config(config.serve)) else "TorchServe was not running")


@serve.command()
@config_options
@client_options
def status(settings, config) -> None:
    """Running or not, health, models and ready workers (JSON); exit 1 when not running."""
    from fer_core.serving.server import server_status

    result = server_status(settings)
    click.echo(json.dumps(result, indent=2))
    if not result["running"]:
        raise SystemExit(1)


@serve.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--model-name", default=None, help="Default serve.model_name.")
@click.option("--version", "model_version", default=None, help="A specific model version (default: the default).")
@click.option("--draw", "draw_path", type=click.Path(dir_okay=False), default=None,
              help="Also write OUT.png: the image with each face's box, label and uncertainty drawn on it "
                   "(with several images, OUT-<image name>.png each).")
@config_options
@client_options
def predict(images, model_name, model_version, draw_path, settings, config) -> None:
    """POST each IMAGE to /predictions/NAME with the bearer key; exit 1 if any answer is an error."""
    from fer_core.io import atomic_write_bytes
    from fer_core.serving.client import ServeError
    from fer_core.serving.pictures import draw_answer
    from fer_core.serving.server import client_for

    try:
        client = client_for(settings)
    except ServeError as exc:
        fail(str(exc))
    failures = 0
    for image in images:
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            click.secho(f"{image}: cannot read: {exc.strerror}", fg="red", err=True)
            failures += 1
            continue
        try:
            answer = client.predict(model_name or config.serve.model_name, data, model_version)
        except OSError as exc:  # requests' connection errors
            fail(f"{settings.inference_url} unreachable: {exc}")
        if answer.ok:
            click.echo(json.dumps({"image": image, **answer.body}))
            if draw_path:
                out = Path(draw_path)
                if len(images) > 1:
                    out = out.with_name(f"{out.stem}-{Path(image).stem}{out.suffix or '.png'}")
                picture = draw_answer(data, answer.body)
                buffer = io.BytesIO()
                picture.save(buffer, format="PNG")
                atomic_write_bytes(out, buffer.getvalue())
                click.echo(f"drew {len(answer.body.get('faces') or [answer.body])} face(s) on {out}", err=True)
        else:
            failures += 1
            message = answer.body.get("message") if isinstance(answer.body, dict) else answer.body
            click.secho(f"{image}: HTTP {answer.status}: {message}", fg="red", err=True)
    if failures:
        raise SystemExit(1)


@serve.command()
@click.argument("mar", type=click.Path(dir_okay=False))
@click.option("--model-name", default=None, help="Default serve.model_name.")
@config_options
@deploy_options
def deploy(mar, model_name, settings, config) -> None:
    """Publish MAR to the model store and swap the running server to it without downtime, registered
    with this environment's workers and batching (serve.workers, serve.batch_size, ...)."""
    from fer_core.serving.client import Registration, ServeError, deploy_model
    from fer_core.serving.package import PackageError, publish_mar

    try:
        stored = publish_mar(mar, settings.model_store)
        result = deploy_model(stored, settings.management_url, "", model_name or config.serve.model_name,
                              registration=Registration.from_serve(config.serve), key_file=settings.key_file)
    except (ServeError, PackageError) as exc:
        fail(str(exc))
    click.echo(json.dumps(result, indent=2))
