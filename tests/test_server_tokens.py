"""Signed tokens behind every link cxm puts in a message."""

from __future__ import annotations

import stat

import pytest

from cxm_cli import tokens
from cxm_cli.workspace import load_workspace
from tests.support.fixtures import write_env


def test_round_trip_and_refusals(workspace):
    token = tokens.sign(workspace, "unsubscribe", {"c": 7, "m": 3})

    assert tokens.verify(workspace, "unsubscribe", token) == {"c": 7, "m": 3}
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(workspace, "click", token)
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(workspace, "unsubscribe", token[:-2] + "xx")
    with pytest.raises(tokens.TokenInvalid, match="expired"):
        tokens.verify(workspace, "unsubscribe", token, max_age_seconds=-1)


def test_generated_secret_is_private_and_stable(workspace):
    first = tokens.sign(workspace, "open", {"m": 1})
    path = workspace.data_dir / tokens.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_workspace(workspace.root)
    assert tokens.verify(again, "open", first) == {"m": 1}


def test_configured_secret_wins(workspace):
    made_with_file = tokens.sign(workspace, "open", {"m": 1})
    write_env(workspace, {"CXM_SECRET_KEY": "a-long-configured-secret-value"})
    configured = load_workspace(workspace.root)
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(configured, "open", made_with_file)
    token = tokens.sign(configured, "open", {"m": 2})
    assert tokens.verify(configured, "open", token) == {"m": 2}
