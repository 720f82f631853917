"""`fer serve package | start | stop | predict`."""

from __future__ import annotations

import click


@click.group()
def serve() -> None:
    """Package the champion for TorchServe, run TorchServe, and call it."""
