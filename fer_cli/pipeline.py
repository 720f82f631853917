"""`fer pipeline compile | run | submit` and `fer demo` (what `make run` calls)."""

from __future__ import annotations

import click

from fer_cli.common import config_options, fail


@click.group()
def pipeline() -> None:
    """Compile, run locally, or submit the Kubeflow pipeline."""


@pipeline.command()
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False))
def compile(out_file) -> None:  # noqa: A001 - the CLI contract's name
    """Compile the pipeline to a KFP v2 YAML package."""
    fail("fer pipeline compile is not built yet (issue: The pipeline)")


@click.command()
@config_options
def demo(config) -> None:
    """The whole flow on embedded defaults (what `make run` does)."""
    fail("fer demo is not built yet")
