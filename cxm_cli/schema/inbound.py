"""Tables owned by the inbound part of cxm: what people send back.

The message itself is a row in ``messages`` (direction ``inbound``) with a
``message.received`` event; the tables here hold only what inbound handling
needs on top: how a message was read (a reply, a keyword, an auto-reply), flags
for a person to look at, which mailbox messages were already ingested, and the
keys that make ``POST /events`` safe to retry.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.inbound")


@migrations(name="0001_inbound_messages_and_mailboxes")
def inbound_messages_and_mailboxes(db):
    db.executescript(
        """
        -- How an inbound message was understood. kind: reply | opt_out | opt_in |
        -- help | auto_reply | keyword_answer (a "C" the engine turned into an
        -- event). Only replies (and flagged messages) open a conversation.
        CREATE TABLE inbound_messages (
            message_id INTEGER PRIMARY KEY
                REFERENCES messages (id) ON DELETE CASCADE,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            keyword TEXT,
            flag TEXT,              -- e.g. possible_opt_out: a person should decide
            closed_at TEXT,         -- set when the team marks the conversation done
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_inbound_messages_contact_id
            ON inbound_messages (contact_id);

        -- One row per IMAP folder: where the last poll stopped.
        CREATE TABLE imap_folders (
            account TEXT NOT NULL,  -- user@host:port, never a password
            folder TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            last_uid INTEGER NOT NULL DEFAULT 0,
            polled_at TEXT,
            PRIMARY KEY (account, folder)
        );

        -- Every mailbox message ever looked at, keyed by a hash of its
        -- Message-ID (or of its bytes), so a UIDVALIDITY change or a restart
        -- never ingests it twice. No addresses are kept here.
        CREATE TABLE imap_messages (
            message_key TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            folder TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            outcome TEXT NOT NULL,  -- reply | auto_reply | bounce | own_copy |
                                    -- unmatched | ignored
            message_id INTEGER REFERENCES messages (id) ON DELETE SET NULL,
            contact_id INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
            ingested_at TEXT NOT NULL
        );
        CREATE INDEX idx_imap_messages_account_folder_uid
            ON imap_messages (account, folder, uidvalidity, uid);

        -- Idempotency keys of POST /events, so a retried webhook records once.
        CREATE TABLE event_keys (
            key TEXT PRIMARY KEY,
            event_id INTEGER REFERENCES events (id) ON DELETE CASCADE,
            contact_id INTEGER REFERENCES contacts (id) ON DELETE CASCADE,
            created_at TEXT NOT NULL
        );
        """
    )


@migrations(name="0002_foreign_key_indexes")
def foreign_key_indexes(db):
    # Deleting a parent row (undoing an import, erasing a contact) looks up
    # its children by these columns; without an index each lookup reads the
    # whole table, so undoing a large import grew with the square of its size.
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS idx_imap_messages_contact_id
            ON imap_messages (contact_id);
        CREATE INDEX IF NOT EXISTS idx_imap_messages_message_id
            ON imap_messages (message_id);
        CREATE INDEX IF NOT EXISTS idx_event_keys_contact_id
            ON event_keys (contact_id);
        CREATE INDEX IF NOT EXISTS idx_event_keys_event_id
            ON event_keys (event_id);
        """
    )
