"""`fer`: data, train, evaluate, pipeline and serve commands (see `fer --help`)."""

from __future__ import annotations

import click

from fer_core.home import quiet_third_parties


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fer-mlops")
def cli() -> None:
    """Facial expression recognition: versioned data to a served model."""
    quiet_third_parties()


def _register() -> None:
    from fer_cli import data, demo, images, pipeline, serve, train

    cli.add_command(data.data)
    cli.add_command(train.train)
    cli.add_command(train.evaluate)
    cli.add_command(pipeline.pipeline)
    cli.add_command(demo.demo)
    cli.add_command(serve.serve)
    cli.add_command(images.images_group, name="images")


_register()
