"""docs/cli.md is generated from the parser: it must match it, and it must document every sub-command and option."""

import argparse
from pathlib import Path

from structmat.cli import build_parser
import shlex

import pytest

from structmat.cli.docs import EXAMPLES, main, render_cli_reference

CLI_PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands(parser, prefix="structmat"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield f"{prefix} {name}", child
                yield from _commands(child, f"{prefix} {name}")


def test_cli_page_is_up_to_date():
    # On failure: python -m structmat.cli.docs -o docs/cli.md
    assert CLI_PAGE.read_text(encoding="utf-8") == render_cli_reference(), \
        "docs/cli.md is out of date with the parser: run `make cli-docs` (python -m structmat.cli.docs -o docs/cli.md)"


def test_every_command_and_option_is_documented():
    text = render_cli_reference()
    commands = list(_commands(build_parser()))
    assert len(commands) > 20
    for prog, parser in commands:
        assert f"`{prog}`" in text, prog
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help", "--verbose", "-v", "--threads"):
                    assert f"`{option}`" in text, (prog, option)


def test_rendering_is_independent_of_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = render_cli_reference()
    monkeypatch.setenv("COLUMNS", "300")
    assert render_cli_reference() == narrow


def test_check_mode_reports_a_stale_page(tmp_path, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text(render_cli_reference().replace("approximate", "approx", 1), encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    main(["-o", str(stale)])
    assert main(["--check", str(stale)]) == 0


@pytest.mark.parametrize("command", [c for c, _ in EXAMPLES])
def test_every_example_command_parses(command):
    words = shlex.split(command)
    assert words[0] == "structmat"
    build_parser().parse_args(words[1:])  # a renamed or removed option exits with code 2 here


def test_readme_command_lines_parse():
    """The README's shell lines use the real parser's options (run nothing, parse only)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    shell = "\n".join(block.split("\n", 1)[1] for block in readme.split("```")[1::2] if block.startswith("sh\n"))
    commands = [part.strip() for line in shell.splitlines() if line.startswith("structmat ")
                for part in line.split("#")[0].split("&&")]
    assert len(commands) >= 5
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])
