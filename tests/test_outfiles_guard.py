"""No output file (--out, --output, --rejects) is ever written over the
workspace's own files: its database and SQLite sidecars, cxm.toml, .env,
sequences/ and templates/ (findings 1-4 of the third new-user trial)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cxm_cli.errors import InputError
from cxm_cli.outfiles import check_writable

LEADS = "Name,Email\nAnn Lee,ann@example.com\nBad Row,not-an-email\n"

# data/cxm.db-shm is checked without a command (see the last test): a
# command that truncates it while the database is mapped in memory kills
# the process (SIGBUS) instead of failing a test.
OWN = [
    "data/cxm.db",
    "data/cxm.db-wal",
    "data/cxm.db-journal",
    "cxm.toml",
    ".env",
    "sequences/new-lead.yaml",
    "sequences/brand-new.yaml",
    "templates/welcome.email.md",
    "data/secret_key",
    "data/outbox/0-999/texts.jsonl",
]


def fingerprint(root: Path) -> dict[str, str]:
    """Every file of the workspace but the database's own, by content: the
    database changes through SQLite, and is checked by reading it back."""
    prints = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("cxm.db"):
            prints[str(path.relative_to(root))] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return prints


def writers(ws: Path, target: Path, leads: Path) -> list[list[str]]:
    """Every command that writes a file the user names, aimed at ``target``."""
    return [
        ["contacts", "export", "-o", str(target)],
        ["contacts", "export", "--format", "jsonl", "--output", str(target)],
        ["contacts", "export-data", "1", "-o", str(target)],
        ["leads", "import", str(leads), "--rejects", str(target)],
        ["reviews", "report", "--out", str(target)],
        ["reviews", "audit-trail", "--out", str(target)],
    ]


@pytest.fixture
def imported(cli, workspace, tmp_path) -> Path:
    """A workspace with one contact, and a leads file with a bad row."""
    (workspace.root / ".env").write_text("SMS_TOKEN=secret\n", encoding="utf-8")
    leads = tmp_path / "leads.csv"
    leads.write_text(LEADS, encoding="utf-8")
    first = cli("leads", "import", str(leads), "--rejects", str(tmp_path / "r.csv"))
    assert first.exit_code == 0, first.stderr
    return leads


def assert_workspace_intact(cli, root: Path, before: dict[str, str]) -> None:
    assert fingerprint(root) == before
    contacts = cli("contacts", "list", "--json")
    assert contacts.exit_code == 0, contacts.stderr
    assert [c["email"] for c in contacts.json()] == ["ann@example.com"]
    assert [b["id"] for b in cli("leads", "batches", "--json").json()] == [1]


@pytest.mark.parametrize("own", OWN)
def test_no_writer_writes_over_the_workspaces_own_files(cli, workspace, imported, own):
    root = workspace.root
    target = root / own
    before = fingerprint(root)

    for args in writers(root, target, imported):
        result = cli(*args)

        assert result.exit_code == 1, (args, result.stderr)
        assert "workspace's own" in result.stderr, (args, result.stderr)
        assert str(target) in result.stderr
        assert "never writes an output there" in result.stderr
        if target.exists() and not own.startswith("data/"):
            assert "ann@example.com" not in target.read_text(encoding="utf-8")
        assert_workspace_intact(cli, root, before)


def test_a_symlink_to_the_database_is_refused_as_the_database(
    cli, workspace, imported, tmp_path
):
    link = tmp_path / "contacts.csv"
    link.symlink_to(workspace.db_path)
    report = tmp_path / "report.html"
    report.symlink_to(workspace.db_path)
    before = fingerprint(workspace.root)

    for args in [
        *writers(workspace.root, link, imported),
        ["audit", "--out", str(report)],
    ]:
        result = cli(*args)

        assert result.exit_code == 1, (args, result.stderr)
        assert "the workspace's own database (data/cxm.db)" in result.stderr
        assert_workspace_intact(cli, workspace.root, before)


def test_a_path_through_a_linked_folder_is_refused(cli, workspace, imported, tmp_path):
    linked = tmp_path / "linked"
    linked.symlink_to(workspace.root / "data")
    before = fingerprint(workspace.root)

    result = cli("contacts", "export", "-o", str(linked / "cxm.db"))

    assert result.exit_code == 1
    assert "the workspace's own database" in result.stderr
    assert_workspace_intact(cli, workspace.root, before)


def test_a_hard_link_to_the_database_is_refused(cli, workspace, imported, tmp_path):
    hard = tmp_path / "contacts.csv"
    try:
        os.link(workspace.db_path, hard)
    except OSError:
        pytest.skip("no hard links on this disk")

    result = cli("contacts", "export", "-o", str(hard))

    assert result.exit_code == 1
    assert "the workspace's own database" in result.stderr
    assert cli("contacts", "list", "--json").exit_code == 0


def test_an_audit_of_exports_is_refused_over_a_template(
    cli, workspace, imported, tmp_path
):
    # An audit of exports needs no workspace: the one around the path counts.
    target = workspace.root / "templates" / "audit.html"

    result = cli("audit", "--leads", str(imported), "--out", str(target))

    assert result.exit_code == 1
    assert "in the workspace's own templates folder" in result.stderr
    assert not target.exists()


def test_contacts_export_refuses_a_symlink_as_rejects_does(cli, imported, tmp_path):
    precious = tmp_path / "precious.csv"
    precious.write_text("keep me\n", encoding="utf-8")
    link = tmp_path / "out.csv"
    link.symlink_to(precious)

    for args in (
        ["contacts", "export", "-o", str(link)],
        ["leads", "import", str(imported), "--rejects", str(link)],
    ):
        result = cli(*args)

        assert result.exit_code == 1, args
        assert "it is a symbolic link" in result.stderr
        assert precious.read_text(encoding="utf-8") == "keep me\n"


def test_default_rejects_of_a_file_inside_sequences_go_to_data(cli, workspace):
    leads = workspace.root / "sequences" / "leads.csv"
    leads.write_text(LEADS, encoding="utf-8")

    result = cli("leads", "import", str(leads))

    assert result.exit_code == 0, result.stderr
    assert not (workspace.root / "sequences" / "leads.rejects.csv").exists()
    assert (workspace.root / "data" / "leads.rejects.csv").is_file()


def test_ordinary_outputs_inside_the_workspace_are_allowed(cli, workspace, imported):
    for name in ("contacts.csv", "data/contacts.csv", "data/outbox.csv", "cxm.db"):
        target = workspace.root / name
        result = cli("contacts", "export", "-o", str(target))

        assert result.exit_code == 0, (name, result.stderr)
        assert "ann@example.com" in target.read_text(encoding="utf-8")


def test_workspace_file_at_names_the_file(workspace, tmp_path):
    from cxm_cli.outfiles import workspace_file_at

    root = workspace.root

    assert workspace_file_at(root / "data" / "cxm.db") == (
        "the workspace's own database (data/cxm.db)"
    )
    assert workspace_file_at(root / "data" / "CXM.DB-WAL") == (
        "the workspace's own database (its write-ahead log) (data/CXM.DB-WAL)"
    )
    assert workspace_file_at(root / "templates" / "a" / "b.html") == (
        "in the workspace's own templates folder (templates/a/b.html)"
    )
    assert workspace_file_at(root / "reports" / "cxm.toml") is None
    assert workspace_file_at(tmp_path / "elsewhere" / "cxm.toml", root) is None
    # The workspace given counts even when no cxm.toml is around the path.
    (root / "cxm.toml").rename(root / "moved.toml")
    assert workspace_file_at(root / ".env") is None
    assert (
        workspace_file_at(root / ".env", root)
        == "the workspace's own secrets file (.env)"
    )
    (root / "moved.toml").rename(root / "cxm.toml")
    with pytest.raises(InputError, match="the workspace's own settings"):
        check_writable(Path(os.path.relpath(root / "cxm.toml")), "--out")
    shm = root / "data" / "cxm.db-shm"
    with pytest.raises(InputError, match=r"own database \(its shared-memory index"):
        check_writable(shm, "--output", root)
