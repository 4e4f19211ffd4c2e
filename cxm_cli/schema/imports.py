"""Tables owned by the imports part of cxm: batches, their changes, duplicates.

A batch is one run of ``cxm leads import``. ``import_changes`` holds what each
row did to a contact (created it, or which fields and identifiers it changed,
with the values before), so ``cxm leads undo`` can revert exactly that batch.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.imports")


@migrations(name="0001_batches_changes_duplicates")
def batches_changes_duplicates(db):
    db.executescript(
        """
        CREATE TABLE import_batches (
            id INTEGER PRIMARY KEY,
            file TEXT NOT NULL,            -- the path as given, or "stdin"
            format TEXT NOT NULL,          -- layout name (google, meta-lead-ads, ...)
            encoding TEXT,
            status TEXT NOT NULL,          -- complete | undone | partly undone
            records INTEGER NOT NULL DEFAULT 0,
            created INTEGER NOT NULL DEFAULT 0,
            updated INTEGER NOT NULL DEFAULT 0,
            unchanged INTEGER NOT NULL DEFAULT 0,
            rejected INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            options TEXT NOT NULL DEFAULT '{}',
            rejects_path TEXT,
            first_event_id INTEGER,        -- events recorded by the batch are
            last_event_id INTEGER,         -- those with ids in this range
            started_at TEXT NOT NULL,
            finished_at TEXT,
            undone_at TEXT
        );

        CREATE TABLE import_changes (
            id INTEGER PRIMARY KEY,
            batch_id INTEGER NOT NULL REFERENCES import_batches (id) ON DELETE CASCADE,
            contact_id INTEGER NOT NULL,   -- no FK: kept after the contact is gone
            row_number INTEGER NOT NULL,
            action TEXT NOT NULL,          -- created | updated
            before TEXT NOT NULL DEFAULT '{}',   -- field values replaced
            after TEXT NOT NULL DEFAULT '{}',    -- field values written
            added TEXT NOT NULL DEFAULT '{}'     -- {emails, phones, tags} added
        );
        CREATE INDEX idx_import_changes_batch_id ON import_changes (batch_id);
        CREATE INDEX idx_import_changes_contact_id ON import_changes (contact_id);

        -- Records of event-style exports already on a timeline, so importing a
        -- lead-form download twice adds no second form.submitted.
        CREATE TABLE import_records (
            record_key TEXT PRIMARY KEY,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            batch_id INTEGER NOT NULL,
            event_id INTEGER
        );
        CREATE INDEX idx_import_records_batch_id ON import_records (batch_id);

        -- Pairs that are probably one person but were not merged automatically
        -- (shared household phone with different emails, email aliases, ...).
        CREATE TABLE likely_duplicates (
            id INTEGER PRIMARY KEY,
            contact_a INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            contact_b INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            reason TEXT NOT NULL,
            batch_id INTEGER,
            status TEXT NOT NULL DEFAULT 'open',   -- open | merged | dismissed
            created_at TEXT NOT NULL,
            UNIQUE (contact_a, contact_b, reason)
        );
        CREATE INDEX idx_likely_duplicates_contact_b ON likely_duplicates (contact_b);
        """
    )


@migrations(name="0002_foreign_key_indexes")
def foreign_key_indexes(db):
    # Deleting a parent row (undoing an import, erasing a contact) looks up
    # its children by these columns; without an index each lookup reads the
    # whole table, so undoing a large import grew with the square of its size.
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS idx_import_records_contact_id
            ON import_records (contact_id);
        """
    )
