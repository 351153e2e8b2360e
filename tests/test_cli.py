"""The console entry point, once per command in a subprocess (the commands' behaviour is tested
in-process in each stage's tests, through conftest.synthgap)."""

from __future__ import annotations

import click
import pytest
from conftest import synthgap

from synthgap.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        out += _commands(command, path) if isinstance(command, click.Group) else [path]
    return out


COMMANDS = _commands(cli)


def test_every_command_is_listed():
    assert {"generate", "pipeline", "serve", "detect", "classify"} <= {c[0] for c in COMMANDS}
    assert ("detector", "tune") in COMMANDS and ("generator", "train") in COMMANDS and ("data", "cifar10") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_command_starts_from_the_console_entry_point_and_explains_itself(command):
    proc = synthgap(*command, "--help", in_subprocess=True)
    assert proc.stdout.startswith(f"Usage: synthgap {' '.join(command)} ") and "--help" in proc.stdout
    assert proc.stderr == ""
