"""`fer train` and `fer evaluate`."""

from __future__ import annotations

import click

from fer_cli.common import config_options, fail


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="Prepared dataset folder.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--epochs", type=int, default=None, help="Shortcut for --set train.epochs=N.")
@click.option("--image-size", type=int, default=None, help="Shortcut for --set train.image_size=N.")
@config_options
def train(data_dir, run_dir, epochs, image_size, config) -> None:
    """Train the CBAM-ResNet with uncertainty mixing and the class-weighted loss."""
    fail("fer train is not built yet (issue: The method)")


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder from fer train.")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="Prepared dataset folder.")
@click.option("--split", default="test", show_default=True)
@config_options
def evaluate(run_dir, data_dir, split, config) -> None:
    """Evaluate a trained run: metrics.json and plots in the run folder."""
    fail("fer evaluate is not built yet (issue: The method)")
