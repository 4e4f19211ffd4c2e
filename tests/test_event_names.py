"""A person named in an event by full name alone gets a first and last name.

``cxm events emit --name "Sam Reed"`` and ``POST /events`` with
``contact.name`` used to set only ``display_name``, so every template fell
back to "Hi there". The name is split as the importer splits a name column.
"""

from __future__ import annotations

import json

import pytest
import requests

from cxm_cli.server import serve_in_thread
from cxm_cli.workspace import load_workspace
from tests.support.fixtures import make_contact, write_env

EVENTS_TOKEN = "events-token-names-0123"


def names(db, email: str) -> tuple[str | None, str | None, str | None]:
    return db.execute(
        "SELECT c.first_name, c.last_name, c.display_name FROM contacts c "
        "JOIN contact_emails e ON e.contact_id = c.id WHERE e.email = ?",
        [email],
    ).fetchone()


def greeting(cli, email: str) -> str:
    preview = cli("templates", "render", "new-lead-email", "-c", email, "--json")
    assert preview.exit_code == 0, preview.stderr
    return preview.json()["body"].splitlines()[0]


def bug_era_contact(db, clock, email: str, *, first=None, last=None, display=None):
    """A contact as the old intake left it: a display name, halves as given."""
    contact_id = make_contact(
        db, clock, first_name=first, last_name=last, email=email, phone=None
    )
    if display:
        db["contacts"].update(contact_id, {"display_name": display})
        db.conn.commit()
    return contact_id


# ---------------------------------------------------------------- cxm events emit


def test_emit_with_a_full_name_gives_a_new_contact_first_and_last(cli, db):
    result = cli(
        "events", "emit", "note.test", "--email", "sam.reed@example.com",
        "--name", "Sam Reed",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert names(db, "sam.reed@example.com") == ("Sam", "Reed", "Sam Reed")
    assert greeting(cli, "sam.reed@example.com") == "Hi Sam,"


def test_emitted_lines_split_a_name_but_given_halves_win(cli, db):
    lines = [
        {"type": "form.submitted", "email": "kim.lee@example.com", "name": "Lee, Kim"},
        {
            "type": "form.submitted",
            "contact": {
                "email": "jo.doe@example.com",
                "name": "Jo Doe",
                "first_name": "Joanna",
                "last_name": "Doe-Hart",
            },
        },
    ]
    stdin = "".join(json.dumps(line) + "\n" for line in lines)

    result = cli("events", "emit", "-", input=stdin)

    assert result.exit_code == 0, result.stderr
    assert names(db, "kim.lee@example.com")[:2] == ("Kim", "Lee")
    assert names(db, "jo.doe@example.com") == ("Joanna", "Doe-Hart", "Jo Doe")


def test_emit_fills_only_the_blank_names_of_a_known_contact(cli, db, clock):
    bug_era_contact(db, clock, "sam.reed@example.com", display="Sam Reed")
    bug_era_contact(db, clock, "kim.lee@example.com", first="Kim")
    bug_era_contact(db, clock, "jo.doe@example.com", first="Jo", last="Doe")
    # Another person's last name under a blank first name: "Sam Smith" is wrong.
    bug_era_contact(db, clock, "pat.smith@example.com", last="Smith")
    people = {
        "sam.reed@example.com": "Sam Reed",
        "kim.lee@example.com": "Kim Lee",
        "jo.doe@example.com": "Joanna Dee",
        "pat.smith@example.com": "Sam Reed",
    }

    for email, name in people.items():
        result = cli("events", "emit", "note.test", "--email", email, "--name", name)
        assert result.exit_code == 0, result.stderr
        assert "new contact" not in result.stderr

    assert names(db, "sam.reed@example.com") == ("Sam", "Reed", "Sam Reed")
    assert names(db, "kim.lee@example.com") == ("Kim", "Lee", "Kim")
    assert names(db, "jo.doe@example.com") == ("Jo", "Doe", "Jo Doe")
    assert names(db, "pat.smith@example.com") == (None, "Smith", "Smith")
    assert greeting(cli, "sam.reed@example.com") == "Hi Sam,"


# ---------------------------------------------------------------- POST /events


@pytest.fixture
def served(workspace, clock):
    write_env(workspace, {"CXM_EVENTS_TOKEN": EVENTS_TOKEN})
    handle = serve_in_thread(
        load_workspace(workspace.root), "127.0.0.1", 0, clock=clock
    )
    yield handle
    handle.stop()


def post_form(served, contact: dict[str, str]):
    return requests.post(
        served.url + "/events",
        json={"type": "form.submitted", "contact": contact},
        headers={"Authorization": f"Bearer {EVENTS_TOKEN}"},
        timeout=10,
    )


def test_a_posted_full_name_gives_a_new_contact_first_and_last(served, db, cli):
    response = post_form(served, {"email": "kim.lee@example.com", "name": "Kim Lee"})

    assert response.status_code == 201, response.text
    assert names(db, "kim.lee@example.com") == ("Kim", "Lee", "Kim Lee")
    assert greeting(cli, "kim.lee@example.com") == "Hi Kim,"


def test_a_posted_full_name_fills_a_known_contacts_blank_names(served, db, clock, cli):
    bug_era_contact(db, clock, "sam.reed@example.com", display="Sam Reed")
    bug_era_contact(db, clock, "jo.doe@example.com", first="Jo", last="Doe")

    filled = post_form(served, {"email": "sam.reed@example.com", "name": "Sam Reed"})
    kept = post_form(served, {"email": "jo.doe@example.com", "name": "Joanna Dee"})

    assert filled.status_code == kept.status_code == 201
    assert names(db, "sam.reed@example.com") == ("Sam", "Reed", "Sam Reed")
    assert names(db, "jo.doe@example.com") == ("Jo", "Doe", "Jo Doe")
    assert greeting(cli, "sam.reed@example.com") == "Hi Sam,"
