"""Every command's ``--help`` says each option's default (or that it has none)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from quotes_client.__main__ import _parser as client_parser
from quotes_server.__main__ import build_parser as server_parser
from quotes_server.publish import build_parser as publish_parser

COMMANDS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "quotes-server": server_parser,
    "quotes-publish": publish_parser,
    "quotes-client": client_parser,
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_with_a_value_says_its_default(name: str) -> None:
    parser = COMMANDS[name]()
    help_text = parser.format_help()
    missing = []
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:
            continue  # positionals, flags (store_true), --help, --version
        if action.help is argparse.SUPPRESS:
            continue
        rendered = parser._get_formatter()._expand_help(action) if action.help else ""
        if "default" not in rendered.lower():
            missing.append(action.option_strings[-1])
    assert not missing, f"{name} --help shows no default for {missing}"
    assert "default" in help_text
