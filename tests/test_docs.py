"""Every command has help with an example and appears in the README."""

import re

import typer.main

from cxm_cli.cli import app
from tests.conftest import REPO_DIR


def leaf_commands(command, path: tuple[str, ...] = ()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from leaf_commands(sub, (*path, name))
        if getattr(command, "invoke_without_command", False) and path:
            yield path, command
    else:
        yield path, command


def all_commands():
    root = typer.main.get_command(app)
    return sorted(leaf_commands(root), key=lambda item: item[0])


def command_reference() -> str:
    readme = (REPO_DIR / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Command reference")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def test_every_command_has_one_line_help_and_example():
    problems = []
    for path, command in all_commands():
        name = "cxm " + " ".join(path)
        help_text = (command.help or "").strip()
        if not help_text or len(help_text.splitlines()[0]) > 88:
            problems.append(f"{name}: no one-line help")
        if "Example:" not in help_text:
            problems.append(f"{name}: no 'Example:' in its help")
    assert problems == []


def test_every_command_is_in_the_readme_reference():
    reference = command_reference()
    missing = []
    for path, _ in all_commands():
        name = "cxm " + " ".join(path)
        # The heading or an example must name the full command.
        if not re.search(re.escape(name) + r"(?![\w-])", reference):
            missing.append(name)
    assert missing == []
