"""The command line explains itself: help with no arguments, help text and defaults on every
option of every command."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator

import pytest

from app.cli import build_parser
from tests.support import REALNAME


def parsers(
    parser: argparse.ArgumentParser, name: str = "realname"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


def test_no_arguments_prints_help_and_succeeds() -> None:
    """`realname` alone prints the usage and the commands, and exits 0."""
    done = subprocess.run([REALNAME], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: realname")
    assert "serve" in done.stdout
    assert "clients" in done.stdout


@pytest.mark.parametrize(("name", "parser"), list(parsers(build_parser())))
def test_every_option_has_help_and_names_its_default(
    name: str, parser: argparse.ArgumentParser
) -> None:
    """Every option of every command has help text, and the text names the default if any."""
    text = parser.format_help()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        if action.default not in (None, False) and not action.required:
            assert f"(default: {action.default})" in " ".join(text.split()), (
                f"{name} {action.option_strings[0]} does not show its default"
            )
