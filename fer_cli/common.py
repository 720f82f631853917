"""Options and helpers every `fer` command shares."""

from __future__ import annotations

import functools
import sys

import click

from fer_core.config import Config, ConfigError, load_config


def config_options(func):
    """--params FILE and repeatable --set section.key=value."""

    @click.option("--params", "params_path", type=click.Path(dir_okay=False), default=None,
                  help="Config file (default: $FER_PARAMS or ./params.yaml, else built-in defaults).")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override one config key; repeatable, e.g. --set train.epochs=3.")
    @functools.wraps(func)
    def wrapper(*args, params_path=None, overrides=(), **kwargs):
        try:
            config = load_config(params_path, list(overrides))
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        return func(*args, config=config, **kwargs)

    return wrapper


def with_shortcuts(config: Config, shortcuts: dict[str, object]) -> Config:
    """CONFIG with the values of shortcut options (`--epochs` for train.epochs, ...) that were given
    (None = not given); a value out of range is a usage error, like a bad --set."""
    given = {key: value for key, value in shortcuts.items() if value is not None}
    try:
        return config.override(given) if given else config
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def fail(message: str, code: int = 1) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


__all__ = ["Config", "config_options", "fail", "with_shortcuts"]
