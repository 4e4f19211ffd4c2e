"""Migrations: from a blank file, and from an older schema to today's."""

import sqlite_utils

from cxm_cli.schema import MIGRATION_SETS
from cxm_cli.store import apply_migrations, open_database


def test_a_blank_file_gets_every_migration_once(tmp_path):
    db = open_database(tmp_path / "cxm.db")
    applied = {row["name"] for row in db.query("SELECT name FROM _sqlite_migrations")}
    blank = sqlite_utils.Database(memory=True)
    expected = {m.name for s in MIGRATION_SETS for m in s.pending(blank)}
    assert applied == expected

    assert apply_migrations(db) == []
    db.close()


def test_an_older_file_is_upgraded_with_its_data_kept(tmp_path):
    path = tmp_path / "cxm.db"
    old = open_database(path, migrate=False)
    core = MIGRATION_SETS[0]
    core.apply(old)
    old.execute(
        "INSERT INTO contacts (display_name, email, custom, created_at, updated_at) "
        "VALUES ('Ana Lima', 'ana.lima@example.com', '{}', 'x', 'x')"
    )
    assert "enrollments" not in old.table_names()
    old.close()

    upgraded = open_database(path)

    assert "enrollments" in upgraded.table_names()
    assert "contact_stages" in upgraded.table_names()
    rows = list(upgraded.query("SELECT display_name FROM contacts"))
    assert rows == [{"display_name": "Ana Lima"}]
    upgraded.close()


def test_every_foreign_key_can_find_its_children_by_index(tmp_path):
    """Deleting a contact (undo, erase) cascades through every child table;
    a child column without an index makes each delete read the whole table."""
    db = open_database(tmp_path / "cxm.db")
    unindexed = []
    for table in db.table_names():
        leading = {
            db.execute(f"PRAGMA index_info('{index[1]}')").fetchone()[2]
            for index in db.execute(f"PRAGMA index_list('{table}')").fetchall()
            if not index[4]  # a partial index finds only some rows
        }
        primary = [
            column[1]
            for column in db.execute(f"PRAGMA table_info('{table}')").fetchall()
            if column[5] == 1
        ]
        leading.update(primary[:1])
        for key in db.execute(f"PRAGMA foreign_key_list('{table}')").fetchall():
            if key[3] not in leading:
                unindexed.append(f"{table}.{key[3]}")
    db.close()
    assert unindexed == []


def test_contact_ids_are_never_handed_out_twice(tmp_path):
    """A contact merged away or erased leaves its id behind for good: outbox
    text lines and files, signed links and logs name contacts by id."""
    path = tmp_path / "cxm.db"
    old = open_database(path, migrate=False)
    MIGRATION_SETS[0].apply(old, stop_before="0003_contact_ids_never_reused")
    for name in ("Ana Lima", "Bo Reyes"):
        old.execute(
            "INSERT INTO contacts (display_name, custom, created_at, updated_at) "
            "VALUES (?, '{}', 'x', 'x')",
            [name],
        )
    old.execute(
        "INSERT INTO events (contact_id, type, at, data, recorded_at) "
        "VALUES (2, 'lead.created', 'x', '{}', 'x')"
    )
    old.close()

    db = open_database(path)
    rows = [tuple(row) for row in db.execute("SELECT id, display_name FROM contacts")]
    assert rows == [(1, "Ana Lima"), (2, "Bo Reyes")]
    assert db.execute("SELECT contact_id FROM events").fetchone()[0] == 2
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1

    db.execute("DELETE FROM contacts WHERE id = 2")
    new_id = db.execute(
        "INSERT INTO contacts (display_name, custom, created_at, updated_at) "
        "VALUES ('Cy New', '{}', 'x', 'x')"
    ).lastrowid
    assert new_id == 3
    # The deleted contact's events went with it (the foreign keys still act).
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    db.close()
