"""Shared fixtures: a fresh workspace per test, a fake clock, a CLI runner.

Every test gets its own workspace under ``tmp_path``; nothing touches shared
paths. Servers that play providers live in ``tests/support/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxm_cli.cli import app
from cxm_cli.clock import FakeClock
from cxm_cli.commands._common import State
from cxm_cli.workspace import init_workspace, load_workspace
from tests.support.fixtures import sms_provider, smtp_server  # noqa: F401

REPO_DIR = Path(__file__).resolve().parents[1]


def _find_corpus() -> Path:
    """The shared real-world exports: $CXM_CORPUS_DIR, else ``shared/corpus``
    beside the checkout or beside any folder above it."""
    if os.environ.get("CXM_CORPUS_DIR"):
        return Path(os.environ["CXM_CORPUS_DIR"])
    for folder in REPO_DIR.parents:
        candidate = folder / "shared" / "corpus"
        if candidate.is_dir():
            return candidate
    return REPO_DIR.parent / "shared" / "corpus"


CORPUS_DIR = _find_corpus()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock("2026-03-02T15:00:00Z")


@pytest.fixture
def workspace(tmp_path: Path):
    root = tmp_path / "ws"
    init_workspace(root, business_name="Bright Smile Dental")
    return load_workspace(root)


@pytest.fixture
def db(workspace):
    database = workspace.open_db()
    yield database
    database.close()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli(workspace, clock):
    """Run cxm in-process against the test workspace with the fake clock."""

    def invoke(*args: str, input: str | bytes | None = None, use_clock: bool = True):
        runner = CliRunner()
        state = State(workspace_path=workspace.root)
        if use_clock:
            state.clock = clock
        result = runner.invoke(app, list(args), input=input, obj=state)
        if state._db is not None:
            state._db.close()
        return CliResult(
            result.exit_code, result.stdout, result.stderr, result.exception
        )

    return invoke
