"""The whole review flow over real loopback servers.

SMS: the request goes out through a Twilio-compatible provider on loopback,
the customer's answer comes back as a signed webhook to ``cxm serve``, and the
thank-you, the invitation and the staff alerts leave through the provider, a
real SMTP server (aiosmtpd) and a real HTTP endpoint. Web: the rating page is
driven by plain HTTP for every score and by headless Chromium for the person
picking a score and writing to the owner.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from cxm_cli.reviews.requests import request_review
from cxm_cli.server import serve_in_thread
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.fixtures import make_contact, update_settings
from tests.support.sms_provider import AUTH_TOKEN

PLACE_ID = "ChIJflowPlace42"
GOOGLE_LINK = f"https://search.google.com/local/writereview?placeid={PLACE_ID}"
FACEBOOK_LINK = "https://www.facebook.com/brightsmile/reviews"
STAFF_EMAIL = "owner@brightsmile.example"
WAIT_SECONDS = 20


class AlertEndpoint:
    """A real HTTP server on loopback that keeps the JSON posted to it."""

    def __init__(self):
        self.posts: list[dict] = []
        self.headers: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                endpoint.posts.append(json.loads(self.rfile.read(length)))
                endpoint.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, what: str):
    """Wait for something done in another thread (the server's after-response
    deliveries); fails naming what never happened."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def live(workspace, clock, sms_provider, smtp_server):
    """A workspace wired to loopback servers, with `cxm serve` running."""
    endpoint = AlertEndpoint().start()
    port = free_port()
    workspace = sms_provider.configure(workspace)
    workspace = smtp_server.configure(workspace)
    workspace = update_settings(
        workspace,
        {
            "server.public_url": f"http://127.0.0.1:{port}",
            "reviews.platforms": [
                {"kind": "google", "place_id": PLACE_ID},
                {"kind": "facebook", "page": "brightsmile"},
            ],
            "reviews.staff_email": STAFF_EMAIL,
            "reviews.alert_webhook_url": endpoint.url,
        },
    )
    handle = serve_in_thread(workspace, "127.0.0.1", port, clock=clock)
    db = workspace.open_db()

    class Live:
        pass

    setup = Live()
    setup.workspace, setup.db, setup.url = workspace, db, handle.url
    setup.sms, setup.smtp, setup.alerts = sms_provider, smtp_server, endpoint
    yield setup
    db.close()
    handle.stop()
    endpoint.stop()


def texts_to(live, phone):
    return [m.form["Body"] for m in live.sms.messages if m.form.get("To") == phone]


def staff_emails(live, contact_id):
    return [
        mail
        for mail in live.smtp.messages
        if STAFF_EMAIL in mail.rcpt_tos and f"contact {contact_id})" in mail.body_text()
    ]


def alerts_for(live, contact_id):
    return [post for post in live.alerts.posts if post["contact"]["id"] == contact_id]


def post_inbound_sms(live, sid, phone, body):
    url = live.url + "/twilio/sms"
    params = {"MessageSid": sid, "From": phone, "To": "+15555550123", "Body": body}
    signed = url + "".join(key + params[key] for key in sorted(params))
    mac = hmac.new(AUTH_TOKEN.encode(), signed.encode(), hashlib.sha1).digest()
    signature = base64.b64encode(mac).decode()
    response = requests.post(
        url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
    )
    assert response.status_code == 200, response.text


def deliveries_done(live, request_id):
    rows = list(
        live.db.query(
            "SELECT status FROM review_deliveries WHERE request_id = ?", [request_id]
        )
    )
    return rows and all(row["status"] in ("sent", "failed") for row in rows)


# ---------------------------------------------------------------- over SMS


def test_every_sms_score_gets_the_public_links_and_low_ones_reach_the_owner(
    live, clock
):
    people = {}
    for score in (1, 2, 3, 4, 5):
        phone = f"+1512555030{score}"
        contact_id = make_contact(
            live.db,
            clock,
            first_name=f"Pat{score}",
            last_name="Lee",
            email=f"pat{score}@example.com",
            phone=phone,
        )
        outcome = request_review(live.workspace, live.db, clock, contact_id)
        assert outcome.status == "sent" and outcome.channel == "sms"
        [request_text] = texts_to(live, phone)
        assert GOOGLE_LINK in request_text and FACEBOOK_LINK in request_text
        assert f"{live.url}/reviews/rate/" in request_text
        people[score] = (contact_id, phone, outcome.request_id)

    answers = {1: "1", 2: "★★", 3: "three", 4: "4/5", 5: "⭐⭐⭐⭐⭐"}
    for score, (_, phone, request_id) in people.items():
        post_inbound_sms(live, f"SMrate{score}", phone, answers[score])
        wait_for(lambda r=request_id: deliveries_done(live, r), f"deliveries {score}")

    for score, (contact_id, phone, request_id) in people.items():
        texts = texts_to(live, phone)
        thanks = texts[1]
        assert GOOGLE_LINK in thanks and FACEBOOK_LINK in thanks, score
        rated = live.db.execute(
            "SELECT rating, rated_via, thanks_sent_at FROM review_requests "
            "WHERE id = ?",
            [request_id],
        ).fetchone()
        assert rated[0] == score and rated[1] == "sms" and rated[2]
        if score <= 3:
            invitation = texts[2]
            assert "what went wrong" in invitation
            assert f"{live.url}/reviews/feedback/" in invitation
            [mail] = staff_emails(live, contact_id)
            assert f"({score}/5)" in mail.message["Subject"]
            assert f"{live.url}/reviews/staff/timeline/" in mail.body_text()
            [alert] = alerts_for(live, contact_id)
            assert alert["rating"] == score and alert["type"] == "review.low_rating"
            assert alert["timeline_url"].startswith(f"{live.url}/reviews/staff/")
        else:
            assert len(texts) == 2
            assert staff_emails(live, contact_id) == []
            assert alerts_for(live, contact_id) == []

    # The first text after a low score's invitation is private feedback.
    contact_id, phone, request_id = people[2]
    post_inbound_sms(live, "SMfeedback", phone, "The hygienist was very rough")
    wait_for(lambda: len(alerts_for(live, contact_id)) == 2, "feedback alert")
    wait_for(lambda: len(staff_emails(live, contact_id)) == 2, "feedback email")
    [feedback] = live.db.query("SELECT * FROM review_feedback")
    assert feedback["body"] == "The hygienist was very rough"
    assert feedback["channel"] == "sms" and feedback["rating"] == 2
    assert alerts_for(live, contact_id)[1]["feedback"] == feedback["body"]
    assert "very rough" in staff_emails(live, contact_id)[1].body_text()

    # The staff link from the alert opens the person's timeline.
    timeline = requests.get(alerts_for(live, contact_id)[0]["timeline_url"], timeout=10)
    assert timeline.status_code == 200
    assert "Pat2 Lee" in timeline.text and "very rough" in timeline.text
    trail = [
        t
        for t in live.db.query(
            "SELECT type FROM events WHERE contact_id = ?", [contact_id]
        )
    ]
    types = [t["type"] for t in trail]
    for expected in (
        "review.requested",
        "review.rated",
        "feedback.received",
        "staff.alerted",
    ):
        assert expected in types


def test_a_reply_that_is_not_a_score_is_left_for_the_inbox(live, clock):
    contact_id = make_contact(live.db, clock)
    outcome = request_review(live.workspace, live.db, clock, contact_id)

    post_inbound_sms(live, "SMchat", "+15125550101", "Can I book again next week?")

    row = live.db.execute(
        "SELECT rating, status FROM review_requests WHERE id = ?", [outcome.request_id]
    ).fetchone()
    assert row == (None, "sent")
    assert len(texts_to(live, "+15125550101")) == 1


# ---------------------------------------------------------------- the page


def rating_link(live, contact_id, clock):
    outcome = request_review(
        live.workspace, live.db, clock, contact_id, channel="email"
    )
    assert outcome.status == "sent"
    email = live.db.execute(
        "SELECT email FROM contacts WHERE id = ?", [contact_id]
    ).fetchone()[0]
    [mail] = [m for m in live.smtp.messages if m.rcpt_tos == [email]]
    body = mail.body_text()
    assert GOOGLE_LINK in body and FACEBOOK_LINK in body
    return outcome.request_id, re.search(r"(http://\S+/reviews/rate/[^\s?]+)", body)[1]


def web_contact(live, clock, n):
    return make_contact(
        live.db,
        clock,
        first_name=f"Web{n}",
        last_name="Visitor",
        email=f"pat{n}@example.com",
        phone=f"+1512555040{n}",
    )


def test_every_web_score_shows_the_public_links_beside_the_feedback_form(live, clock):
    for score in (1, 2, 3, 4, 5):
        contact_id = web_contact(live, clock, score)
        request_id, link = rating_link(live, contact_id, clock)

        page = requests.get(link, timeout=10)
        assert page.status_code == 200 and 'name="score"' in page.text
        answered = requests.post(link, data={"score": str(score)}, timeout=10)

        assert answered.status_code == 200
        assert GOOGLE_LINK in answered.text and FACEBOOK_LINK in answered.text
        assert 'id="feedback-form"' in answered.text
        queued = live.db.execute(
            "SELECT kind FROM review_deliveries WHERE request_id = ? ORDER BY kind",
            [request_id],
        ).fetchall()
        if score <= 3:
            assert queued == [("staff_email",), ("staff_webhook",)]
            wait_for(lambda r=request_id: deliveries_done(live, r), "alerts")
            assert len(alerts_for(live, contact_id)) == 1
            assert len(staff_emails(live, contact_id)) == 1
        else:
            assert queued == []


def test_a_get_records_nothing_and_a_used_link_records_nothing_new(live, clock):
    contact_id = web_contact(live, clock, 7)
    request_id, link = rating_link(live, contact_id, clock)
    events_before = live.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    requests.get(link + "?score=1", timeout=10)
    assert live.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == events_before

    assert requests.post(link, data={"score": "4"}, timeout=10).status_code == 200
    after_first = live.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    again = requests.post(link, data={"score": "1"}, timeout=10)

    assert again.status_code == 409 and GOOGLE_LINK in again.text
    assert live.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == after_first
    rating = live.db.execute(
        "SELECT rating FROM review_requests WHERE id = ?", [request_id]
    ).fetchone()[0]
    assert rating == 4


def test_a_forged_token_is_refused_politely_and_records_nothing(live, clock):
    contact_id = web_contact(live, clock, 8)
    _, link = rating_link(live, contact_id, clock)
    before = [
        live.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in ("events", "review_token_uses", "review_feedback")
    ]
    token = link.rsplit("/", 1)[1]
    forged = (
        link[: -len(token)] + token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    )

    for response in (
        requests.post(forged, data={"score": "1"}, timeout=10),
        requests.post(
            live.url + "/reviews/feedback/" + token, data={"feedback": "x"}, timeout=10
        ),
        requests.get(live.url + "/reviews/rate/not-a-token", timeout=10),
    ):
        assert response.status_code == 400
        assert "Nothing was recorded" in response.text
    after = [
        live.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in ("events", "review_token_uses", "review_feedback")
    ]
    assert after == before


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_rating_page_in_headless_chromium(live, clock):
    from playwright.sync_api import sync_playwright

    low_contact = web_contact(live, clock, 2)
    low_request, low_link = rating_link(live, low_contact, clock)
    high_contact = web_contact(live, clock, 5)
    _, high_link = rating_link(live, high_contact, clock)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()

            # A low score: public links and, beside them, the private form.
            page.goto(low_link + "?score=2")
            assert page.locator("button.selected").inner_text().startswith("2")
            page.click("button[name=score][value='2']")
            page.wait_for_selector("#public-links")
            links = page.locator("#public-links a.platform")
            assert links.count() == 2
            assert links.nth(0).get_attribute("href") == GOOGLE_LINK
            assert links.nth(1).get_attribute("href") == FACEBOOK_LINK
            assert page.locator("#feedback-form").is_visible()
            page.fill("#feedback", "Waited 40 minutes past my appointment time.")
            page.click("#feedback-form button[type=submit]")
            page.wait_for_selector("#feedback-sent")
            assert page.locator("#public-links a.platform").count() == 2

            # A top score sees the very same public links and form.
            page.goto(high_link)
            page.click("button[name=score][value='5']")
            page.wait_for_selector("#public-links")
            assert (
                page.locator("#public-links a.platform").nth(0).get_attribute("href")
                == GOOGLE_LINK
            )
            assert page.locator("#feedback-form").is_visible()

            # A tampered token is refused and nothing is recorded.
            events_before = live.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            token = low_link.rsplit("/", 1)[1]
            tampered = low_link[: -len(token)] + token[:10] + "x" + token[11:]
            response = page.goto(tampered)
            assert response.status == 400
            assert page.locator("#link-refused").is_visible()
            assert page.locator("#public-links").count() == 0
            events_after = live.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            assert events_after == events_before
        finally:
            browser.close()

    wait_for(lambda: len(alerts_for(live, low_contact)) == 2, "low score + feedback")
    [feedback] = live.db.query(
        "SELECT body, channel, rating FROM review_feedback WHERE request_id = ?",
        [low_request],
    )
    assert feedback == {
        "body": "Waited 40 minutes past my appointment time.",
        "channel": "web",
        "rating": 2,
    }
    wait_for(lambda: len(staff_emails(live, low_contact)) == 2, "staff emails")
    assert alerts_for(live, high_contact) == []
