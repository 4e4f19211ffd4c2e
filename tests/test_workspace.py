from pathlib import Path

import pytest

from cxm_cli.errors import WorkspaceNotFound
from cxm_cli.workspace import find_workspace


def test_init_creates_workspace_files(cli, tmp_path: Path):
    target = tmp_path / "new"

    result = cli("init", str(target), "--name", "Lakeside Law", "--json")

    assert result.exit_code == 0, result.stderr
    assert (target / "cxm.toml").is_file()
    assert (target / ".env.example").is_file()
    assert (target / "data" / "cxm.db").is_file()
    assert 'name = "Lakeside Law"' in (target / "cxm.toml").read_text()


def test_init_refuses_existing_workspace(cli, workspace):
    result = cli("init", str(workspace.root))

    assert result.exit_code == 1
    assert "already exists" in result.stderr


def test_missing_workspace_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("CXM_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)

    with pytest.raises(WorkspaceNotFound, match="no cxm workspace"):
        find_workspace()


def test_workspace_found_from_subfolder(workspace, monkeypatch):
    monkeypatch.delenv("CXM_WORKSPACE", raising=False)
    monkeypatch.chdir(workspace.sequences_dir)

    assert find_workspace().root == workspace.root


def test_database_is_wal_with_foreign_keys(db):
    assert db.journal_mode == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    names = {row["name"] for row in db.query("SELECT name FROM _sqlite_migrations")}
    assert "0001_contacts_and_events" in names
