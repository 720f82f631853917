"""`fer demo` (= `make run`): the whole flow on embedded defaults, ending in a served prediction.

1. render a synthetic RAF-DB-shaped dataset into a git + DVC data repo under $FER_HOME and push it
   to the local DVC remote;
2. start TorchServe on 127.0.0.1 (token auth) unless it already runs;
3. run the Kubeflow pipeline on the local runner from that DVC revision: ingest, validate, class
   weights, train, evaluate, register (quality gate), deploy the champion into TorchServe;
4. send a test image of each class to the REST API and print the answers, then a real photograph with
   its answer drawn on it, the registered version and its metrics.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

import click

from fer_core.config import Config
from fer_core.profiles import CPU_PROFILE

# The method's CPU profile (fer_core/profiles.py: 48 px, small stem, global head pooling, clipped class
# weights, mixing after 4 of 12 epochs) on a 30 % RAF-DB-sized synthetic set with clean labels: about
# 10 minutes on 2 cores. Label noise is the ablation's subject (bench/ablation.py): with 10 % of train
# labels flipped, validation (carved from train) is noisy too and 10 epochs reached 0.74 test accuracy.
# params.yaml's own defaults are the paper's GPU settings. Override any key with --set; these only fill
# what was not set.
DEMO_PROFILE = {
    "synth.scale": 0.3,
    "synth.noise_rate": 0.0,
    **CPU_PROFILE,
}


def _step(text: str) -> None:
    click.secho(f"\n==> {text}", fg="cyan", bold=True)


def demo_overrides(user_overrides: list[str] | tuple[str, ...]) -> list[str]:
    """The demo profile first, the user's --set after it (later wins)."""
    return [f"{key}={value}" for key, value in DEMO_PROFILE.items()] + list(user_overrides)


def run_demo(config: Config, *, scale: float | None = None, verbose: bool = False) -> None:
    from fer_cli.pipeline import run_local_pipeline  # the layer beside: demo -> pipeline, never back
    from fer_core.data.synth import synthesize
    from fer_core.home import default_tracking_uri, fer_home
    from fer_core.serving.client import ServeError
    from fer_core.serving.server import ServerSettings, client_for, start_server
    from fer_core.versioning import add_and_push, init_repo

    started = time.perf_counter()
    if scale is not None:
        config = config.override({"synth.scale": scale})
    home = fer_home()
    repo = home / "data-repo"
    _step(f"1/4 synthetic RAF-DB-shaped dataset (scale {config.synth.scale}), versioned with DVC in {repo}")
    init_repo(repo, remote_url=str(home / "dvc-remote"), standalone=True)
    summary = synthesize(repo / "rafdb", config.synth, progress=sys.stderr.isatty())
    click.echo(f"rendered {summary.get('num_images', '?')} images in {summary.get('render_seconds', 0):.0f} s")
    version = add_and_push(repo, repo / "rafdb", message=f"synthetic RAF-DB (scale {config.synth.scale}, "
                                                          f"seed {config.synth.seed})")
    click.echo(f"DVC: rafdb at git revision {version.rev[:12]} (md5 {version.md5}) pushed to {version.remote}")

    _step("2/4 TorchServe on 127.0.0.1 (token auth on)")
    settings = ServerSettings.from_config(config.serve)
    try:
        state = start_server(settings)
    except ServeError as exc:
        raise click.ClickException(f"TorchServe did not start: {exc}") from None
    click.echo(("started" if state["started"] else "already running") + f" (pid {state['pid']}), "
               f"inference {settings.inference_url}, management {settings.management_url}")

    _step("3/4 the Kubeflow pipeline on the local runner (SubprocessRunner, use_venv=False)")
    result = run_local_pipeline(config, {"dvc_repo": str(repo), "dvc_rev": version.rev, "dvc_path": "rafdb"},
                                data_format="rafdb", experiment="fer", verbose=verbose)  # the CLI default
    _ensure_champion_served(config, settings, result)

    _step("4/4 REST predictions from TorchServe: one test image per class, beside its true label")
    client = client_for(settings)
    samples = _test_images_per_class(repo / "rafdb")
    click.echo(f"POST {settings.inference_url}/predictions/{config.serve.model_name}")
    click.echo(f"  {'image':<22} {'true label':<10} {'answer':<10} {'p':>5} {'uncertainty':>11} {'review':>6}")
    right, first_answer = 0, None
    for image, truth in samples:
        answer = client.predict(config.serve.model_name, image.read_bytes())
        if not answer.ok:
            raise click.ClickException(f"prediction failed for {image.name}: HTTP {answer.status}: {answer.body}")
        body = answer.body
        first_answer = first_answer or body
        label = body["label"]
        right += label == truth
        review = {True: "yes", False: "no", None: "-"}[body.get("review")]
        click.echo(f"  {image.name:<22} {truth:<10} {label:<10} {body['probabilities'][label]:>5.2f} "
                   f"{body['uncertainty']:>11.3f} {review:>6}  {'ok' if label == truth else 'WRONG'}")
    click.echo(f"{right} of {len(samples)} answers match the true label. One answer in full:")
    click.echo(json.dumps(first_answer, separators=(", ", ": ")))
    image = samples[0][0]
    picture = _photo_answer(client, config, home / "demo")

    tracking_uri = default_tracking_uri()
    click.secho("\nDone in {:.1f} min.".format((time.perf_counter() - started) / 60), fg="green", bold=True)
    click.echo(f"registered model {result['model_name']} version {result['registered_version']} "
               f"(aliases: {', '.join(result.get('aliases') or []) or 'none'}; champion is version "
               f"{result.get('champion_version')})")
    click.echo(f"quality gate: {result.get('gate')}")
    for key, value in (result.get("metrics") or {}).items():
        click.echo(f"  {key:<32} {value}")
    click.echo(f"\nMLflow UI:   .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --port 5000")
    click.echo(f"predict:     .venv/bin/fer serve predict {image}")
    click.echo(f"a photo:     .venv/bin/fer serve predict {picture['photo']} --draw {picture['drawn']}")
    click.echo("status/stop: .venv/bin/fer serve status | .venv/bin/fer serve stop")
    click.echo(f"artifacts:   {result['pipeline_root']}")
    click.echo(f"full log:    {result['log']}")


def _photo_answer(client, config: Config, out_dir: Path) -> dict[str, str]:
    """POST a real photograph (the public-domain portrait matplotlib ships) and draw the answer on it:
    the face step finds and aligns the face; the demo model's expression answer means nothing there."""
    import matplotlib

    from fer_core.io import atomic_write_bytes
    from fer_core.serving.pictures import draw_answer

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    data = photo.read_bytes()
    answer = client.predict(config.serve.model_name, data)
    if not answer.ok:
        raise click.ClickException(f"prediction failed for {photo}: HTTP {answer.status}: {answer.body}")
    drawn = out_dir / "photo-answer.png"
    buffer = io.BytesIO()
    draw_answer(data, answer.body).save(buffer, format="PNG")
    atomic_write_bytes(drawn, buffer.getvalue())
    faces = answer.body["faces"]
    click.echo(f"\nA real photo ({photo.name}, {len(faces)} face(s)): " + "; ".join(
        f"box {face['box']} {'detected' if face['detected'] else 'no face found, whole image'} -> {face['label']}"
        for face in faces))
    click.echo(f"drawn on the photo: {drawn}")
    click.echo("(the demo model learned drawn faces: its expression answers on real photos mean nothing; "
               "train on RAF-DB or your own photos for real ones, docs/faces.md)")
    return {"photo": str(photo), "drawn": str(drawn)}


def _ensure_champion_served(config: Config, settings, result: dict) -> None:
    """The pipeline deploys a *new* champion; when this run did not beat the champion (a rerun), make
    sure the existing champion is what TorchServe serves."""
    from fer_core.home import default_tracking_uri
    from fer_core.serving.server import server_status
    from fer_core.steps import deploy_step

    served = server_status(settings).get("models", {}).get(config.serve.model_name)
    champion = result.get("champion_version")
    if served and champion is not None:
        return
    if champion is None:
        raise click.ClickException("no champion in the registry: the quality gate rejected the model "
                                   f"({result.get('gate')})")
    click.echo(f"loading champion version {champion} into TorchServe")
    with tempfile.TemporaryDirectory() as work:
        deploy_step(f"models:/{result['model_name']}@champion", config, out_dir=Path(work),
                    tracking_uri=default_tracking_uri(), model_store=str(settings.model_store),
                    management_url=settings.management_url, key_file=str(settings.key_file))


def _test_images_per_class(raf_root: Path) -> list[tuple[Path, str]]:
    """The first test image of each class in the dataset's own list (RAF-DB names test images
    test_NNNN), with its label; images are stored as NAME_aligned.jpg."""
    from fer_core import labels
    from fer_core.data.synth import parse_label_list

    list_file = raf_root / "EmoLabel" / "list_patition_label.txt"
    rows = parse_label_list(list_file.read_text(encoding="utf-8"), str(list_file))
    picked: dict[str, Path] = {}
    for row in sorted(rows, key=lambda r: r.name):
        name = labels.RAFDB_CODES.get(row.code, "unknown")
        if not row.name.startswith("test_") or name in picked:
            continue
        stem, _, suffix = row.name.rpartition(".")
        image = raf_root / "Image" / "aligned" / f"{stem}_aligned.{suffix}"
        if image.is_file():
            picked[name] = image
    if not picked:
        raise click.ClickException(f"{raf_root}: no test images to send")
    return [(image, name) for name, image in picked.items()]


@click.command()
@click.option("--scale", type=float, default=None, help="Fraction of RAF-DB's size for the synthetic set.")
@click.option("--params", "params_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (default: $FER_PARAMS or ./params.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a key of the demo's CPU profile or the config; repeatable.")
@click.option("--verbose", "-v", is_flag=True,
              help="Show everything the pipeline's local runner writes (the full log is saved either way).")
def demo(scale, params_path, overrides, verbose) -> None:
    """The whole flow on embedded defaults (what `make run` does): synthetic data versioned with DVC,
    the pipeline on the local Kubeflow runner, the champion on TorchServe, a REST prediction."""
    from fer_core.config import ConfigError, load_config

    try:
        config = load_config(params_path, demo_overrides(overrides))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    run_demo(config, scale=scale, verbose=verbose)
