"""Tables owned by the reviews part of cxm.

``review_requests`` is the compliance record: one row per time cxm meant to ask
someone for a review, whether it asked (and on which channel, offering which
public links) or why it did not. A rating never removes or hides a row.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.reviews")


@migrations(name="0001_review_requests_feedback_reviews")
def review_requests_feedback_reviews(db):
    db.executescript(
        """
        CREATE TABLE review_requests (
            id INTEGER PRIMARY KEY,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            -- scheduled | sending | sent | answered | skipped | cancelled | failed
            status TEXT NOT NULL,
            channel TEXT,                 -- sms | email, once chosen
            source TEXT NOT NULL,         -- guard | sequence | cli | segment
            sequence TEXT,
            due_step_id INTEGER,
            trigger_event_id INTEGER,     -- the job: appointment.completed, ...
            trigger_type TEXT,
            trigger_at TEXT,
            due_at TEXT,                  -- end of the guard delay
            platforms TEXT NOT NULL DEFAULT '[]',   -- offered: [{key,name,url}]
            rating_page INTEGER NOT NULL DEFAULT 0, -- the message linked the page
            nonce TEXT NOT NULL UNIQUE,   -- binds the signed rating link
            message_id INTEGER,
            reason TEXT,                  -- why skipped / cancelled / failed
            rating INTEGER,
            rated_at TEXT,
            rated_via TEXT,               -- sms | web
            thanks_sent_at TEXT,          -- thank-you with the public links
            feedback_invited_at TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX idx_review_requests_contact_id_status
            ON review_requests (contact_id, status);
        CREATE INDEX idx_review_requests_status_due_at
            ON review_requests (status, due_at);
        CREATE INDEX idx_review_requests_due_step_id
            ON review_requests (due_step_id);

        -- A signed link may be used once; the nonce's row is the proof of use.
        CREATE TABLE review_token_uses (
            nonce TEXT PRIMARY KEY,
            request_id INTEGER NOT NULL
                REFERENCES review_requests (id) ON DELETE CASCADE,
            purpose TEXT NOT NULL,        -- rate | feedback
            used_at TEXT NOT NULL
        );

        CREATE TABLE review_feedback (
            id INTEGER PRIMARY KEY,
            request_id INTEGER REFERENCES review_requests (id) ON DELETE CASCADE,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            channel TEXT NOT NULL,        -- web | sms
            rating INTEGER,
            body TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX idx_review_feedback_request_id ON review_feedback (request_id);
        CREATE INDEX idx_review_feedback_contact_id ON review_feedback (contact_id);

        -- Public reviews brought in from platform exports; unmatched ones are
        -- kept with no contact.
        CREATE TABLE reviews (
            id INTEGER PRIMARY KEY,
            platform TEXT NOT NULL,
            external_id TEXT NOT NULL,
            author TEXT,
            author_email TEXT,
            rating INTEGER,
            body TEXT,
            body_translated TEXT,
            reply TEXT,
            reviewed_at TEXT NOT NULL,
            contact_id INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
            request_id INTEGER REFERENCES review_requests (id) ON DELETE SET NULL,
            match_note TEXT,
            source_file TEXT,
            imported_at TEXT NOT NULL,
            UNIQUE (platform, external_id)
        );
        CREATE INDEX idx_reviews_contact_id ON reviews (contact_id);
        CREATE INDEX idx_reviews_reviewed_at ON reviews (reviewed_at);

        -- What answering a request sets in motion: the thank-you text, the
        -- invitation after a low score, staff alerts by email and webhook.
        -- Queued in the answer's transaction, sent after it commits.
        CREATE TABLE review_deliveries (
            id INTEGER PRIMARY KEY,
            request_id INTEGER REFERENCES review_requests (id) ON DELETE CASCADE,
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            kind TEXT NOT NULL,  -- thanks | invite | staff_email | staff_webhook
            payload TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL,         -- pending | sending | sent | failed
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at TEXT NOT NULL,
            last_error TEXT,
            message_id INTEGER,
            created_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX idx_review_deliveries_status_next_at
            ON review_deliveries (status, next_at);
        CREATE INDEX idx_review_deliveries_request_id
            ON review_deliveries (request_id);
        """
    )


@migrations(name="0002_foreign_key_indexes")
def foreign_key_indexes(db):
    # Deleting a parent row (undoing an import, erasing a contact) looks up
    # its children by these columns; without an index each lookup reads the
    # whole table, so undoing a large import grew with the square of its size.
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS idx_review_token_uses_request_id
            ON review_token_uses (request_id);
        CREATE INDEX IF NOT EXISTS idx_reviews_request_id
            ON reviews (request_id);
        CREATE INDEX IF NOT EXISTS idx_review_deliveries_contact_id
            ON review_deliveries (contact_id);
        """
    )
