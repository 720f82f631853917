"""README's `fer` command list and quick start cannot drift from the code: every command it lists
exists, every option it names is in that command's --help, every command takes --params/--set as the
README says, and the make targets it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from fer_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _listed_commands() -> dict[tuple[str, ...], set[str]]:
    """{("data", "ingest"): {"--format", ...}} from the code block under "## The `fer` command"."""
    block = README.split("## The `fer` command", 1)[1].split("```", 2)[1]
    listed: dict[tuple[str, ...], set[str]] = {}
    current: list[tuple[str, ...]] = []
    for line in block.splitlines():
        if line.startswith("fer "):
            usage = re.split(r"\s{2,}", line, maxsplit=1)[0]
            path = []
            for word in usage.split()[1:]:
                if not re.fullmatch(r"[a-z|]+", word):
                    break
                path.append(word)
            *group, last = path
            current = [(*group, name) for name in last.split("|")]
            for command in current:
                listed[command] = set()
        for command in current:   # options on the line and its continuation lines (usage and description)
            listed[command] |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line))
    return listed


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group) and name in command.commands, f"README lists `fer {' '.join(path)}`"
        command = command.commands[name]
    return command


def _options(command: click.Command) -> set[str]:
    return {option for param in command.params for option in (*param.opts, *param.secondary_opts)}


def test_every_listed_command_and_option_exists():
    listed = _listed_commands()
    assert len(listed) >= 15 and ("pipeline", "submit") in listed and ("serve", "deploy") in listed
    for path, options in listed.items():
        known = _options(_command(path))
        assert options <= known, f"README names {sorted(options - known)} for `fer {' '.join(path)}`"
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)


def test_every_leaf_command_takes_params_and_set_as_the_readme_says():
    assert "Every command takes `--params FILE` and `--set section.key=value` (but `fer images`" in README

    def leaves(command, path=()):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from leaves(sub, (*path, name))
        else:
            yield path, command

    for path, command in leaves(cli):
        if path[0] == "images":   # builds from docker/, reads no config
            continue
        assert {"--params", "--set"} <= _options(command), f"`fer {' '.join(path)}` lacks --params/--set"


def test_the_make_targets_the_readme_names_exist():
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M))
    named = set(re.findall(r"`make ([a-z-]+)`", README)) | set(re.findall(r"^make ([a-z-]+)", README, flags=re.M))
    assert {"run", "test", "test-fast", "bench"} <= named
    assert named <= targets, named - targets
