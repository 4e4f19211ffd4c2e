"""The workspace database: one SQLite file, WAL mode, foreign keys on.

The schema is the sum of ordered migration sets, one per part of cxm (see
``cxm_cli/schema/``). Each migration runs in one transaction with its record in
``_sqlite_migrations``, so an interrupted upgrade never half-applies and a later
release can upgrade any older file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.utils import dedupe_keys

from cxm_cli.errors import CxmError
from cxm_cli.schema import MIGRATION_SETS

log = logging.getLogger(__name__)

# Several runners, the web service and the CLI may write at once; SQLite
# serialises writers, and a generous busy timeout turns contention into waiting.
# An import holds the write lock for its whole batch (it is atomic), so the
# wait must outlast a large import rather than fail a runner's claim.
BUSY_TIMEOUT_MS = 300_000


def open_database(path: Path | str, *, migrate: bool = True) -> sqlite_utils.Database:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db = sqlite_utils.Database(conn)
    try:
        if db.journal_mode != "wal":
            db.enable_wal()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise storage_error(exc, path) from exc
    db.execute("PRAGMA foreign_keys = ON")
    # NORMAL is durable across application crashes in WAL mode; only a power
    # loss can drop the last commits, which the claim/lease design tolerates.
    db.execute("PRAGMA synchronous = NORMAL")
    if migrate:
        apply_migrations(db)

    # Every opened database may record events, so every hook must be present.
    from cxm_cli.features import load_features

    load_features()
    return db


# SQLite's primary result codes for trouble with the disk, not the file's content.
_DISK_TROUBLE = {
    3: "permission denied",  # SQLITE_PERM
    8: "the file is read-only",  # SQLITE_READONLY
    10: "disk I/O error",  # SQLITE_IOERR
    13: "the disk is full",  # SQLITE_FULL
    14: "the file cannot be opened",  # SQLITE_CANTOPEN
}


def is_disk_trouble(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _DISK_TROUBLE


def storage_error(exc: sqlite3.Error, path: Path | str | None = None) -> CxmError:
    """What to tell a user about a database error: a disk that cannot be
    written (full, read-only, a file-size limit) is not a broken database,
    and moving a healthy file aside would be the wrong cure."""
    where = f"{path}: " if path else "the workspace database: "
    if is_disk_trouble(exc):
        return CxmError(
            f"{where}cannot read or write the database ({exc})",
            hint="check free disk space (df -h), the permissions of the workspace's "
            "data/ folder, and any file-size limit (ulimit -f)",
        )
    return CxmError(
        f"{where}not a readable cxm database ({exc})",
        hint="restore it from a backup, or move it aside to start afresh",
    )


def apply_migrations(db: sqlite_utils.Database) -> list[str]:
    """Apply every pending migration, set by set, in the declared order."""
    applied: list[str] = []
    for migration_set in MIGRATION_SETS:
        pending = [m.name for m in migration_set.pending(db)]
        if pending:
            migration_set.apply(db)
            applied.extend(f"{migration_set.name}:{name}" for name in pending)
    if applied:
        log.info("applied %d migrations", len(applied))
    return applied


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A transaction that takes SQLite's write lock at once (BEGIN IMMEDIATE).

    Read-then-write sequences such as claiming a due step must hold the write
    lock from their first read, or two processes can both read the same row as
    free. Nested use becomes a savepoint inside the outer transaction.
    """
    conn = db.conn
    if conn.in_transaction:
        # One name for every level: savepoints nest strictly here, and SQLite
        # releases or rolls back the most recent one of a name, so the same
        # three statements serve every level (and stay in the statement cache).
        conn.execute("SAVEPOINT cxm_nested")
        try:
            yield db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO SAVEPOINT cxm_nested")
                conn.execute("RELEASE SAVEPOINT cxm_nested")
            raise
        conn.execute("RELEASE SAVEPOINT cxm_nested")
        return

    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def dumps(value: Any) -> str:
    """JSON for a TEXT column: compact, keys sorted, non-ASCII kept readable."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    return json.loads(text)


def fetch_one(db: sqlite_utils.Database, sql: str, params=()) -> dict | None:
    """The first row of a SELECT as a dict (column names as keys), or None.

    Runs on the connection directly: sqlite-utils' ``query`` wraps every
    statement in a savepoint, three statements for one read on the hot paths.
    """
    cursor = db.conn.execute(sql, () if params is None else params)
    try:
        row = cursor.fetchone()
        if row is None:
            return None
        # Duplicate names are told apart as ``query`` does it: id, id_2.
        columns = dedupe_keys(column[0] for column in cursor.description)
    finally:
        cursor.close()
    return dict(zip(columns, row, strict=True))
