"""Tables owned by the follow-up engine: enrollments, the queue, runner state.

An enrollment is one contact inside one sequence; its rows are never deleted,
so they double as the history that re-enrolment policies look at. A due step is
the one next thing an active enrollment will do, and is the unit the runner
claims with a lease.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.engine")


@migrations(name="0001_enrollments_and_queue")
def enrollments_and_queue(db):
    db.executescript(
        """
        CREATE TABLE enrollments (
            id INTEGER PRIMARY KEY,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            sequence TEXT NOT NULL,
            sequence_group TEXT,          -- one active sequence per group
            priority INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,         -- active | completed | exited
            trigger_event_id INTEGER REFERENCES events (id) ON DELETE SET NULL,
            trigger_type TEXT,
            trigger_data TEXT NOT NULL DEFAULT '{}',
            enrolled_at TEXT NOT NULL,
            ended_at TEXT,
            end_reason TEXT
        );
        CREATE INDEX idx_enrollments_contact_id_status
            ON enrollments (contact_id, status);
        CREATE INDEX idx_enrollments_sequence_contact_id_enrolled_at
            ON enrollments (sequence, contact_id, enrolled_at);
        -- A contact is in a sequence at most once at a time.
        CREATE UNIQUE INDEX idx_enrollments_contact_id_sequence_active
            ON enrollments (contact_id, sequence) WHERE status = 'active';

        CREATE TABLE due_steps (
            id INTEGER PRIMARY KEY,
            enrollment_id INTEGER NOT NULL
                REFERENCES enrollments (id) ON DELETE CASCADE,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            sequence TEXT NOT NULL,
            step_index INTEGER NOT NULL,
            step_label TEXT,
            kind TEXT NOT NULL,
            due_at TEXT NOT NULL,
            -- pending | claimed | done | skipped | failed | cancelled
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,   -- failed tries (retries)
            claims INTEGER NOT NULL DEFAULT 0,     -- times claimed (crash loops)
            claimed_by TEXT,
            lease_until TEXT,
            note TEXT,                    -- why it is due then (wait, deferral)
            last_error TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX idx_due_steps_status_due_at ON due_steps (status, due_at);
        CREATE INDEX idx_due_steps_contact_id ON due_steps (contact_id);
        -- An enrollment has at most one live step: the chain never forks.
        CREATE UNIQUE INDEX idx_due_steps_enrollment_id_live
            ON due_steps (enrollment_id) WHERE status IN ('pending', 'claimed');

        -- Reply keywords a sent step offered (C to confirm, R to reschedule).
        CREATE TABLE keyword_offers (
            id INTEGER PRIMARY KEY,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            enrollment_id INTEGER REFERENCES enrollments (id) ON DELETE CASCADE,
            due_step_id INTEGER,
            keywords TEXT NOT NULL,       -- {"C": "appointment.confirmed", ...}
            offered_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            answered_at TEXT,
            answer TEXT
        );
        CREATE INDEX idx_keyword_offers_contact_id_expires_at
            ON keyword_offers (contact_id, expires_at);

        -- The runner lease: who may run unattended right now.
        CREATE TABLE runner_leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            mode TEXT NOT NULL,           -- daemon | once
            pid INTEGER,
            host TEXT,
            acquired_at TEXT NOT NULL,
            lease_until TEXT NOT NULL
        );

        CREATE TABLE runner_runs (
            id INTEGER PRIMARY KEY,
            runner TEXT NOT NULL,
            mode TEXT NOT NULL,
            pid INTEGER,
            started_at TEXT NOT NULL,
            last_pass_at TEXT,
            finished_at TEXT,
            steps_done INTEGER NOT NULL DEFAULT 0,
            steps_failed INTEGER NOT NULL DEFAULT 0,
            steps_deferred INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX idx_runner_runs_started_at ON runner_runs (started_at);

        -- Per-sender send slots, shared by every runner process.
        CREATE TABLE rate_slots (
            key TEXT PRIMARY KEY,
            next_at TEXT NOT NULL
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
        CREATE INDEX IF NOT EXISTS idx_enrollments_trigger_event_id
            ON enrollments (trigger_event_id);
        CREATE INDEX IF NOT EXISTS idx_keyword_offers_enrollment_id
            ON keyword_offers (enrollment_id);
        CREATE INDEX IF NOT EXISTS idx_due_steps_enrollment_id
            ON due_steps (enrollment_id);
        """
    )


@migrations(name="0003_due_step_keys")
def due_step_keys(db):
    # What a queued step is (kind, channel, template, name), so the runner
    # finds it again after steps are inserted or removed above it, instead of
    # running whatever step now sits at its old position.
    db.execute("ALTER TABLE due_steps ADD COLUMN step_key TEXT")
