"""Unsubscribe (RFC 8058) and email tracking links, over real HTTP."""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser

import pytest
import requests

from cxm_cli.channels import OutboundMessage
from cxm_cli.channels.outbox import contact_files
from cxm_cli.contacts import consent_status
from cxm_cli.messaging import send_message
from cxm_cli.server import serve_in_thread
from cxm_cli.tracking import add_email_links
from tests.support.fixtures import make_contact


@pytest.fixture
def served(workspace, clock):
    handle = serve_in_thread(workspace, "127.0.0.1", 0, clock=clock)
    workspace.config.setdefault("server", {})["public_url"] = handle.url
    yield handle
    handle.stop()


def sent_email(workspace, contact_id):
    files = [p for p in contact_files(workspace, contact_id) if p.suffix == ".eml"]
    assert files, "the outbox holds no email"
    return BytesParser(policy=policy.default).parsebytes(files[-1].read_bytes())


def test_email_carries_one_click_unsubscribe_that_only_post_honours(
    served, workspace, db, clock
):
    contact_id = make_contact(db, clock)
    send_message(
        workspace, db, clock, contact_id, "email", text="Hello", subject="Welcome"
    )
    email = sent_email(workspace, contact_id)

    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(.+)>", email["List-Unsubscribe"]).group(1)
    assert url.startswith(served.url + "/unsubscribe/")
    assert url in email.get_body(("plain",)).get_content()

    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert "a***@example.com" in page.text
    assert consent_status(db, contact_id, "email") is None

    one_click = requests.post(
        url,
        data="List-Unsubscribe=One-Click",
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    assert consent_status(db, contact_id, "email") == "opted_out"
    event = next(db.query("SELECT * FROM events WHERE type = 'opted_out'"))
    assert event["source"] == "email_unsubscribe"


def test_an_edited_unsubscribe_link_changes_nothing(served, workspace, db, clock):
    first = make_contact(db, clock)
    other = make_contact(db, clock, email="bo@example.com", phone="+15125550102")
    send_message(workspace, db, clock, first, "email", text="Hi", subject="Hi")
    url = re.fullmatch(r"<(.+)>", sent_email(workspace, first)["List-Unsubscribe"])[1]

    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    assert requests.post(tampered, timeout=10).status_code == 404
    assert (
        requests.get(served.url + "/unsubscribe/garbage", timeout=10).status_code == 404
    )
    assert consent_status(db, first, "email") is None
    assert consent_status(db, other, "email") is None


def test_open_pixel_and_click_redirect_are_recorded(served, workspace, db, clock):
    contact_id = make_contact(db, clock)
    workspace.config["server"].update(track_opens=True, track_clicks=True)
    message_id = (
        db["messages"]
        .insert(
            {
                "contact_id": contact_id,
                "channel": "email",
                "direction": "outbound",
                "status": "sent",
                "at": "2026-03-02T15:00:00.000000Z",
            }
        )
        .last_pk
    )
    message = OutboundMessage(
        channel="email",
        to="ana@example.com",
        body="Book now",
        subject="Hi",
        contact_id=contact_id,
        html_body='<html><body><a href="https://booking.example.com/a?b=1&amp;c=2">'
        "Book</a></body></html>",
    )

    add_email_links(workspace, db, message, {"id": contact_id}, message_id)

    pixel = re.search(r'<img src="([^"]+)"', message.html_body).group(1)
    link = re.search(r'<a href="([^"]+)"', message.html_body).group(1)
    assert "booking.example.com" not in link
    opened = requests.get(pixel.replace("&amp;", "&"), timeout=10)
    assert opened.status_code == 200 and opened.headers["Content-Type"] == "image/gif"
    clicked = requests.get(
        link.replace("&amp;", "&"), allow_redirects=False, timeout=10
    )
    assert clicked.status_code == 302
    assert clicked.headers["Location"] == "https://booking.example.com/a?b=1&c=2"

    types = [
        row["type"]
        for row in db.query(
            "SELECT type FROM events WHERE contact_id = ? ORDER BY id", [contact_id]
        )
    ]
    assert types.count("email.opened") == 1 and types.count("email.clicked") == 1

    forged = requests.get(
        served.url + "/c/not-a-token", allow_redirects=False, timeout=10
    )
    assert forged.status_code == 404


def test_without_public_url_emails_are_left_alone(workspace, db, clock):
    contact_id = make_contact(db, clock)
    send_message(workspace, db, clock, contact_id, "email", text="Hi", subject="Hi")
    assert sent_email(workspace, contact_id)["List-Unsubscribe"] is None
