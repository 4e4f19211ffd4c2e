import os
import subprocess
import sys
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


def rewrite_setting(workspace, old: str, new: str) -> None:
    text = workspace.config_path.read_text()
    assert old in text
    workspace.config_path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('timezone = "America/Chicago"', 'timezone = "Mars/Olympus"', "timezone"),
        ('phone_region = "US"', 'phone_region = "ZZ"', "phone_region"),
        ('start = "08:00"', 'start = "8am"', "quiet_hours.start"),
        ("sms_per_day = 1", 'sms_per_day = "one"', "caps.sms_per_day"),
    ],
)
def test_broken_core_settings_are_refused_when_the_workspace_loads(
    workspace, cli, old, new, key
):
    rewrite_setting(workspace, old, new)

    result = cli("status")

    assert result.exit_code == 1
    assert key in result.stderr
    assert "cxm.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_database_file_is_one_clear_error(workspace, cli):
    workspace.db_path.write_bytes(b"this is not a database\n" * 100)
    for suffix in ("-wal", "-shm"):
        workspace.db_path.with_name("cxm.db" + suffix).unlink(missing_ok=True)

    result = cli("status")

    assert result.exit_code == 1
    assert "not a readable cxm database" in result.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs resource limits")
def test_a_disk_that_refuses_writes_is_not_called_a_damaged_database(workspace):
    """A file-size limit stands in for a full disk: SQLite cannot write its
    log, and the message must not send a user to move a healthy file aside."""
    import resource

    workspace.open_db().close()
    for suffix in ("-wal", "-shm"):
        workspace.db_path.with_name("cxm.db" + suffix).unlink(missing_ok=True)

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    result = subprocess.run(
        [sys.executable, "-m", "cxm_cli", "--workspace", str(workspace.root), "status"],
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
        timeout=120,
    )

    assert result.returncode == 1, result.stderr
    assert "cannot read or write the database" in result.stderr
    assert "ulimit -f" in result.stderr
    assert "not a readable cxm database" not in result.stderr
    assert "Traceback" not in result.stderr


def test_init_names_the_business_after_its_folder(cli, tmp_path: Path):
    target = tmp_path / "bright-smile_dental"

    result = cli("init", str(target))

    assert result.exit_code == 0, result.stderr
    assert 'name = "Bright Smile Dental"' in (target / "cxm.toml").read_text()
