"""`fer data synth | ingest | validate`."""

from __future__ import annotations

import click

from fer_core.data.formats import READERS as FORMATS
from fer_cli.common import config_options, fail


@click.group()
def data() -> None:
    """Make, ingest and validate datasets."""


@data.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (RAF-DB basic layout).")
@click.option("--scale", type=float, default=None,
              help="Stratified fraction of the RAF-DB list (per split and class). [synth.scale]")
@click.option("--image-size", type=int, default=None, help="Side of the square JPEGs in pixels. [synth.image_size]")
@click.option("--seed", type=int, default=None, help="Same seed, same bytes. [synth.seed]")
@click.option("--noise", type=click.Choice(["none", "noise01", "noise02", "noise03"]), default=None,
              help="Real noisy-label protocol file for the train rows (about 10/20/30 % flipped). [synth.noise]")
@click.option("--noise-rate", type=float, default=None,
              help="Or flip this share of train labels at random. [synth.noise_rate]")
@click.option("--noise-kind", type=click.Choice(["uniform", "confusable"]), default=None,
              help="Flips at --noise-rate go to any other class (uniform) or to the class's confusable "
                   "partner, e.g. fear->surprise (confusable: class-dependent noise). [synth.noise_kind]")
@click.option("--workers", type=int, default=None,
              help="Render processes (default: one per core); the output does not depend on it.")
@click.option("--list", "list_file", type=click.Path(dir_okay=False), default=None,
              help="Another <name> <code> list in RAF-DB's format (default: the real RAF-DB list).")
@config_options
def synth(out_dir, scale, image_size, seed, noise, noise_rate, noise_kind, workers, list_file, config) -> None:
    """Render synthetic faces in RAF-DB basic's own layout (names, splits, labels of the real list).

    Writes OUT/EmoLabel/list_patition_label.txt, OUT/Image/aligned/<stem>_aligned.jpg and
    OUT/synth_truth.csv (clean label, flipped, intensity and cue partner per image). Flags override the config's
    synth section; a noise flag given alone clears the other kind of noise.
    """
    from fer_core.data.synth import SynthError, synthesize

    overrides: dict = {}
    for key, value in (("scale", scale), ("image_size", image_size), ("seed", seed), ("noise_rate", noise_rate),
                       ("noise_kind", noise_kind)):
        if value is not None:
            overrides[f"synth.{key}"] = value
    if noise is not None:
        overrides["synth.noise"] = "" if noise == "none" else noise
        overrides.setdefault("synth.noise_rate", 0.0)
    elif noise_rate is not None:
        overrides["synth.noise"] = ""
    config = config.override(overrides) if overrides else config
    try:
        summary = synthesize(out_dir, config.synth, workers=workers, list_file=list_file)
    except SynthError as exc:
        fail(str(exc))
    click.echo(f"wrote {summary['num_images']} faces ({summary['num_flipped']} labels flipped) to "
               f"{summary['out_dir']} in {summary['render_seconds']:.1f} s "
               f"({summary['images_per_second']} images/s)")
    for split, counts in summary["counts"].items():
        click.echo(f"  {split}: " + ", ".join(f"{name} {count}" for name, count in counts.items()))


@data.command()
@click.option("--format", "fmt", required=True, type=click.Choice(sorted(FORMATS)),
              help="The dataset's public format.")
@click.option("--source", default="", help="Local path or s3://bucket/prefix (or give --dvc-repo and --dvc-path).")
@click.option("--dvc-repo", default="", help="A DVC data repo (path or git URL) holding the dataset, instead of --source.")
@click.option("--dvc-rev", default="", help="The git revision of --dvc-repo (commit, tag or branch; default HEAD).")
@click.option("--dvc-path", default="", help="The dataset's folder inside --dvc-repo.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Prepared dataset folder.")
@config_options
def ingest(fmt, source, dvc_repo, dvc_rev, dvc_path, out_dir, config) -> None:
    """Read a dataset in its public format into a prepared dataset (manifest.csv + images).

    The source is a local folder, s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL) or a path in a
    DVC repo at a revision. The same step as the pipeline's ingest: OUT also gets data_version.json
    (source, DVC revision, manifest digest). Exit 2 when the source cannot be read; rows it cannot use
    go to OUT/rejected.csv with their reasons.
    """
    from fer_core.config import ConfigError
    from fer_core.data.sources import SourceError
    from fer_core.io import OutputError
    from fer_core.steps import ingest_step
    from fer_core.versioning import VersioningError

    if not source and not dvc_repo:
        raise click.UsageError("give --source, or --dvc-repo with --dvc-path")
    try:
        summary = ingest_step(out_dir, config, source=source, fmt=fmt, dvc_repo=dvc_repo, dvc_rev=dvc_rev,
                              dvc_path=dvc_path, progress=True)
    except (SourceError, ConfigError, OutputError, VersioningError, ValueError) as exc:
        fail(str(exc), code=2)
        return
    names = summary["class_names"]
    width = max(len(name) for name in names)
    click.echo(f"{'class':<{width}}  {'train':>7} {'val':>7} {'test':>7}")
    for name in names:
        click.echo(f"{name:<{width}}  " + " ".join(f"{summary['counts'][split][name]:>7}" for split in ("train", "val", "test")))
    click.echo(f"{'total':<{width}}  " + " ".join(f"{sum(summary['counts'][split].values()):>7}" for split in ("train", "val", "test")))
    if summary["carved_val"]:
        click.echo(f"val carved from train: {summary['carved_val']['total']} images "
                   f"(fraction {summary['carved_val']['fraction']}, seed {summary['carved_val']['seed']})")
    no_face = summary["dropped"].get("no face", 0)
    dropped = (f"{summary['num_dropped'] - no_face} dropped by the format's protocol"
               + (f", {no_face} photos without a face" if no_face else ""))
    click.echo(f"inputs {summary['num_inputs']}, images {summary['num_images']}, rejected {summary['num_rejected']} "
               f"({summary['num_errors']} errors, {dropped})")
    faces = summary.get("faces") or {}
    if faces.get("mode") == "detect":
        click.echo(f"faces: the largest face of each photo aligned to the {faces['template_source']} template "
                   f"({faces['crop_size']} px, margin {faces['margin']}); boxes and scores in {summary['path']}/faces.csv")
    elif faces.get("template_source") == "measured":
        measured = faces["measured_on"]
        click.echo(f"faces: images taken as aligned; their template measured on {measured['faces']} faces found in "
                   f"{measured['images']} train images (serving aligns photos to it)")
    if summary["num_rejected"]:
        click.echo(f"reasons: {summary['path']}/rejected.csv")
    click.echo(f"prepared dataset: {summary['path']}")


@data.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Where report.json and report.html go (default DATA_DIR/validation).")
@click.option("--skip-image-checks", is_flag=True, default=False,
              help="Check the manifest only; do not open the image files (existence, header, size).")
@click.option("--image-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads reading image headers: more help on network disks, not on a local one.")
@config_options
def validate(data_dir, report_dir, skip_image_checks, image_workers, config) -> None:
    """Great Expectations checks on a prepared dataset; exit 0 valid, 1 invalid, 2 no manifest.csv."""
    import sys

    from fer_core.steps import validate_step
    from fer_core.validation import ManifestNotFoundError

    try:
        result = validate_step(data_dir, report_dir, config, check_images=not skip_image_checks,
                               image_workers=image_workers)
    except ManifestNotFoundError as exc:
        fail(str(exc), code=2)
    for check in result.failures + result.warnings:
        colour = "red" if check in result.failures else "yellow"
        click.secho(f"{check.severity.upper()} {check.name}: {check.message}", fg=colour)
        for example in check.examples:
            click.echo("    " + ", ".join(f"{key}={value}" for key, value in example.items()))
    summary = result.summary
    verdict = "VALID" if result.success else "INVALID"
    click.secho(f"{verdict}: {summary['rows']} rows, {summary['passed']}/{summary['checks']} checks passed, "
                f"{summary['critical_failures']} critical failure(s), {summary['warnings']} warning(s) "
                f"in {summary['seconds']:.1f}s", fg="green" if result.success else "red", bold=True)
    click.echo(f"report: {result.report_json}")
    click.echo(f"report: {result.report_html}")
    sys.exit(0 if result.success else 1)


@data.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="weights.json to write (scheme, counts and weight per class).")
@config_options
def weights(data_dir, out_file, config) -> None:
    """Class weights of the loss from DATA_DIR's train split counts (docs/method.md section 4).

    The pipeline's class-weights step: the config's weights section (scheme, beta, max_weight), the
    JSON `fer train --weights` reads (the same as RUN/weights.json), a bar plot beside it (same name,
    .png) and class_distribution.png. Exit 2 when DATA_DIR has no manifest.csv.
    """
    from fer_core.data.prepared import manifest_path
    from fer_core.steps import class_weights_step

    manifest = manifest_path(data_dir)
    if not manifest.is_file():
        fail(f"{manifest} missing: {data_dir} is not a prepared dataset (run `fer data ingest` first)", code=2)
    try:
        report = class_weights_step(data_dir, out_file, config)
    except ValueError as exc:
        fail(f"{manifest}: {exc}")
    width = max(len(name) for name in report["class_names"])
    for name in report["class_names"]:
        click.echo(f"{name:<{width}}  {report['counts'][name]:>7}  {report['weights'][name]:8.4f}")
    click.echo(f"class weights ({config.weights.scheme}): {out_file}")
