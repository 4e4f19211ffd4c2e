"""Tables owned by the pipelines part of cxm.

The history of every move is on the timeline (``stage.changed`` events); this
table is the current state, one row per contact and pipeline, so the board and
segment listings never have to replay events.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.pipelines")


@migrations(name="0001_contact_stages")
def contact_stages(db):
    db.executescript(
        """
        CREATE TABLE contact_stages (
            contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            pipeline TEXT NOT NULL,
            stage TEXT NOT NULL,
            entered_at TEXT NOT NULL,   -- when the contact reached this stage
            value REAL,                 -- deal value, when known
            note TEXT,
            moved_by TEXT,              -- cli, rule:<n>, sequence:<name>, ...
            updated_at TEXT NOT NULL,
            PRIMARY KEY (contact_id, pipeline)
        );
        CREATE INDEX idx_contact_stages_pipeline_stage_entered_at
            ON contact_stages (pipeline, stage, entered_at);
        """
    )
