"""Contacts, their identifiers and consent, and the event timeline.

Everything that happens to a person is a row in ``events``, appended and never
rewritten. The other tables here are current-state views kept up to date as
events are recorded (primary email and phone, tags, consent).
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.core")


@migrations(name="0001_contacts_and_events")
def contacts_and_events(db):
    db.executescript(
        """
        CREATE TABLE contacts (
            id INTEGER PRIMARY KEY,
            display_name TEXT,
            first_name TEXT,
            last_name TEXT,
            company TEXT,
            email TEXT,            -- primary email, normalised
            phone TEXT,            -- primary phone, E.164
            source TEXT,
            timezone TEXT,         -- IANA zone when known
            region TEXT,           -- state or province code, for local rules
            custom TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX idx_contacts_email ON contacts (email);
        CREATE INDEX idx_contacts_phone ON contacts (phone);

        -- Same normalised email is the same person: unique across contacts.
        CREATE TABLE contact_emails (
            id INTEGER PRIMARY KEY,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            email TEXT NOT NULL UNIQUE,
            is_primary INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'ok',   -- ok | bouncing
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_contact_emails_contact_id ON contact_emails (contact_id);

        -- A phone may be shared (households, front desks): unique per contact only.
        CREATE TABLE contact_phones (
            id INTEGER PRIMARY KEY,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            phone TEXT NOT NULL,
            extension TEXT,
            kind TEXT,            -- mobile | home | work | fax | other
            is_primary INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            UNIQUE (contact_id, phone)
        );
        CREATE INDEX idx_contact_phones_phone ON contact_phones (phone);

        CREATE TABLE contact_tags (
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (contact_id, tag)
        );
        CREATE INDEX idx_contact_tags_tag ON contact_tags (tag);

        -- Current consent per channel ('email', 'sms'); the history is in events.
        CREATE TABLE consents (
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            channel TEXT NOT NULL,
            status TEXT NOT NULL,     -- opted_in | opted_out
            source TEXT,
            changed_at TEXT NOT NULL,
            PRIMARY KEY (contact_id, channel)
        );

        -- One-way hashes of erased or suppressed identifiers, so a later import
        -- never messages an erased person again.
        CREATE TABLE suppressions (
            id INTEGER PRIMARY KEY,
            identifier_hash TEXT NOT NULL UNIQUE,
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        );

        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            contact_id INTEGER REFERENCES contacts (id) ON DELETE CASCADE,
            type TEXT NOT NULL,
            at TEXT NOT NULL,          -- when it happened
            data TEXT NOT NULL DEFAULT '{}',
            source TEXT,               -- what recorded it: import, cli, runner, ...
            recorded_at TEXT NOT NULL
        );
        CREATE INDEX idx_events_contact_id_at ON events (contact_id, at);
        CREATE INDEX idx_events_type_at ON events (type, at);

        -- A message is also an event (message.sent / message.received); this
        -- table holds what only messages have.
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            event_id INTEGER REFERENCES events (id) ON DELETE SET NULL,
            channel TEXT NOT NULL,         -- email | sms | ...
            direction TEXT NOT NULL,       -- outbound | inbound
            address TEXT,                  -- the person's email or phone used
            subject TEXT,
            body TEXT,
            template TEXT,
            status TEXT NOT NULL,          -- sent | delivered | failed | received
            provider_id TEXT,              -- provider's message id or Message-ID
            thread_id TEXT,
            due_step_id INTEGER,
            error TEXT,
            at TEXT NOT NULL
        );
        CREATE INDEX idx_messages_contact_id_at ON messages (contact_id, at);
        CREATE UNIQUE INDEX idx_messages_channel_provider_id
            ON messages (channel, provider_id) WHERE provider_id IS NOT NULL;
        """
    )


@migrations(name="0002_foreign_key_indexes")
def foreign_key_indexes(db):
    # Deleting a parent row (undoing an import, erasing a contact) looks up
    # its children by these columns; without an index each lookup reads the
    # whole table, so undoing a large import grew with the square of its size.
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS idx_messages_event_id
            ON messages (event_id);
        """
    )


@migrations(name="0003_contact_ids_never_reused", transactional=False)
def contact_ids_never_reused(db):
    # A contact id names outbox files, signed links and log lines; SQLite
    # hands a deleted highest id (a contact merged away or erased) to the next
    # new contact unless the table is AUTOINCREMENT, which only a rebuild can
    # add. SQLite's documented way: foreign keys off, rebuild in a
    # transaction, check the keys, foreign keys on again. Runs again safely
    # if interrupted before it was recorded.
    conn = db.conn
    [table_sql] = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'contacts'"
    ).fetchone()
    if "AUTOINCREMENT" in table_sql.upper():
        return
    new_sql = table_sql.replace("CREATE TABLE contacts", "CREATE TABLE contacts_new", 1)
    new_sql = new_sql.replace(
        "id INTEGER PRIMARY KEY", "id INTEGER PRIMARY KEY AUTOINCREMENT", 1
    )
    if "AUTOINCREMENT" not in new_sql:
        raise RuntimeError("contacts table: id column not found for AUTOINCREMENT")
    index_sql = [
        row[0]
        for row in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'contacts' AND sql IS NOT NULL"
        )
    ]
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(new_sql)
            conn.execute("INSERT INTO contacts_new SELECT * FROM contacts")
            conn.execute("DROP TABLE contacts")
            conn.execute("ALTER TABLE contacts_new RENAME TO contacts")
            for statement in index_sql:
                conn.execute(statement)
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:3]}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
