"""`fer data synth | ingest | validate`."""

from __future__ import annotations

import click

from fer_cli.common import config_options, fail


@click.group()
def data() -> None:
    """Make, ingest and validate datasets."""


@data.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (RAF-DB basic layout).")
@config_options
def synth(out_dir, config) -> None:
    """Render synthetic faces in RAF-DB basic's own layout (names, splits, labels of the real list)."""
    fail("fer data synth is not built yet (issue: Foundation and data)")


@data.command()
@click.option("--format", "fmt", required=True, help="rafdb | affectnet | fer2013 | ferplus | imagefolder")
@click.option("--source", required=True, help="Local path or s3://bucket/prefix.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Prepared dataset folder.")
@config_options
def ingest(fmt, source, out_dir, config) -> None:
    """Read a dataset in its public format into a prepared dataset (manifest.csv + images)."""
    fail("fer data ingest is not built yet (issue: Foundation and data)")


@data.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Where report.json and report.html go (default DATA_DIR/validation).")
@config_options
def validate(data_dir, report_dir, config) -> None:
    """Great Expectations checks on a prepared dataset; exit 0 valid, 1 invalid."""
    fail("fer data validate is not built yet (issue: Foundation and data)")
