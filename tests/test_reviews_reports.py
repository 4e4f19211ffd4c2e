"""Reviews in (imports), the dashboard, the compliance trail, and the CLI."""

from __future__ import annotations

import csv
import json

from cxm_cli.contacts import add_tag
from cxm_cli.events import record_event
from cxm_cli.reviews.answers import record_rating
from cxm_cli.reviews.requests import request_review
from cxm_cli.sequences import load_sequences
from tests.support.fixtures import make_contact, update_settings

PLACE_ID = "ChIJreportPlace7"
GOOGLE_LINK = f"https://search.google.com/local/writereview?placeid={PLACE_ID}"

REVIEWS_CSV = """\
Platform,Author,Rating,Text,Date
Google,Jane Doe,5,"Lovely staff, painless cleaning",2026-03-10
google,Bob S.,4 stars,Quick and friendly,03/12/2026
Facebook,Somebody Unknown,★★,Parking was a nightmare,2026-02-20
Google,A Google user,3,,2026-02-21T09:30:00Z
"""

GOOGLE_JSON = {
    "reviews": [
        {
            "name": "accounts/1/locations/2/reviews/r-100",
            "reviewId": "r-100",
            "reviewer": {"displayName": "Jane Doe", "isAnonymous": False},
            "starRating": "FOUR",
            "comment": "(Translated by Google) Very good\n\n(Original)\nMuy bueno",
            "createTime": "2026-03-05T10:11:12.123456789Z",
            "updateTime": "2026-03-05T10:11:12.123456789Z",
            "reviewReply": {
                "comment": "Gracias!",
                "updateTime": "2026-03-06T08:00:00Z",
            },
        },
        {
            "name": "accounts/1/locations/2/reviews/r-101",
            "reviewId": "r-101",
            "reviewer": {"displayName": "Someone", "isAnonymous": True},
            "starRating": "STAR_RATING_UNSPECIFIED",
            "createTime": "2026-03-07T10:00:00Z",
            "updateTime": "2026-03-07T10:00:00Z",
        },
    ],
    "averageRating": 4,
    "totalReviewCount": 2,
}


def configure(workspace, **settings):
    values = {"reviews.platforms": [{"kind": "google", "place_id": PLACE_ID}]}
    return update_settings(workspace, {**values, **settings})


def people(db, clock):
    jane = make_contact(db, clock, first_name="Jane", last_name="Doe")
    bob = make_contact(
        db,
        clock,
        first_name="Bob",
        last_name="Smith",
        email="bob@example.com",
        phone="+15125550102",
    )
    return jane, bob


# ---------------------------------------------------------------- import


def test_csv_import_matches_people_keeps_the_rest_and_is_idempotent(
    cli, workspace, db, clock, tmp_path
):
    workspace = configure(workspace)
    jane, bob = people(db, clock)
    asked = request_review(workspace, db, clock, jane)
    path = tmp_path / "reviews.csv"
    path.write_text(REVIEWS_CSV, encoding="utf-8")

    result = cli("reviews", "import", str(path), "--json")

    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["imported"] == 4 and summary["matched"] == 2
    assert summary["unmatched"] == 2 and summary["linked_to_requests"] == 1
    assert summary["platforms"] == {"google": 3, "facebook": 1}
    rows = {r["author"]: r for r in db.query("SELECT * FROM reviews")}
    assert rows["Jane Doe"]["contact_id"] == jane
    assert rows["Jane Doe"]["request_id"] == asked.request_id
    assert rows["Bob S."]["contact_id"] == bob and rows["Bob S."]["rating"] == 4
    assert rows["Somebody Unknown"]["contact_id"] is None
    assert rows["Somebody Unknown"]["rating"] == 2
    assert rows["A Google user"]["match_note"] == "anonymous reviewer"
    # Dates without a time are noon at the business, on the day written.
    assert rows["Bob S."]["reviewed_at"].startswith("2026-03-12T17:00")

    received = [
        (e["contact_id"], json.loads(e["data"])["platform"], e["at"][:10])
        for e in db.query("SELECT * FROM events WHERE type = 'review.received'")
    ]
    assert sorted(received) == [
        (jane, "google", "2026-03-10"),
        (bob, "google", "2026-03-12"),
    ]

    again = cli("reviews", "import", str(path), "--json").json()
    assert again["imported"] == 0 and again["duplicates"] == 4
    assert db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 4


def test_a_bad_row_stops_the_import_naming_it_and_nothing_is_kept(
    cli, workspace, db, tmp_path
):
    path = tmp_path / "bad.csv"
    path.write_text(
        "platform;author;stars;review;date\n"
        "google;Ann;5;great;2026-01-02\n"
        "google;Ben;excellent;ok;2026-01-03\n"
        "google;Cy;4;fine;someday\n",
        encoding="cp1252",
    )

    result = cli("reviews", "import", str(path))

    assert result.exit_code != 0
    assert "bad.csv: line 3" in result.stderr and "line 4" in result.stderr
    assert db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0


def test_google_business_profile_json_is_read(cli, workspace, db, clock, tmp_path):
    jane, _ = people(db, clock)
    path = tmp_path / "google.json"
    path.write_text(json.dumps(GOOGLE_JSON), encoding="utf-8")

    result = cli("reviews", "import", str(path), "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["format"] == "google-json"
    rows = {r["external_id"]: r for r in db.query("SELECT * FROM reviews")}
    first = rows["r-100"]
    assert first["rating"] == 4 and first["contact_id"] == jane
    assert first["body"] == "Muy bueno" and first["body_translated"] == "Very good"
    assert first["reply"] == "Gracias!"
    assert first["reviewed_at"] == "2026-03-05T10:11:12.123456Z"
    assert rows["r-101"]["rating"] is None and rows["r-101"]["author"] is None


# ---------------------------------------------------------------- report


def build_history(workspace, db, clock):
    """Two asks (one rated 2 on the web), one public review after the ask."""
    jane, bob = people(db, clock)
    job = record_event(db, jane, "appointment.completed", clock=clock)
    asked = request_review(workspace, db, clock, jane, job=job)
    request_review(workspace, db, clock, bob)
    record_rating(workspace, db, clock, asked.request_id, 2, via="web")
    return jane, bob


def test_report_json_terminal_and_html(cli, workspace, db, clock, tmp_path):
    workspace = configure(workspace, **{"reviews.trigger_on": []})
    build_history(workspace, db, clock)
    path = tmp_path / "reviews.csv"
    path.write_text(REVIEWS_CSV, encoding="utf-8")
    assert cli("reviews", "import", str(path)).exit_code == 0

    report = cli("reviews", "report", "--json").json()

    assert report["requests"]["sent"] == 2
    assert report["answers"]["rated"] == 1 and report["answers"]["answer_rate"] == 0.5
    assert report["public_reviews"]["total"] == 4
    assert report["public_reviews"]["after_requests"] == 2
    by_month = {(r["month"], r["platform"]): r for r in report["ratings_by_month"]}
    assert by_month[("2026-03", "private")]["average"] == 2
    assert by_month[("2026-03", "google")]["count"] == 2
    assert by_month[("2026-02", "facebook")]["average"] == 2
    assert [t["month"] for t in report["trend"]] == ["2026-02", "2026-03"]
    assert report["trend"][1]["cumulative_public_average"] == 3.5
    assert 8 <= report["time_to_review"]["median_days_from_job"] <= 10

    terminal = cli("reviews", "report")
    assert terminal.exit_code == 0
    assert "Requests sent       2" in terminal.stdout
    assert "2026-03" in terminal.stdout and "#" in terminal.stdout

    out = tmp_path / "reviews.html"
    assert cli("reviews", "report", "--out", str(out)).exit_code == 0
    html = out.read_text(encoding="utf-8")
    assert html.count("<svg") == 2 and "<rect" in html and "<polyline" in html
    for fetched in ("<script", "src=", "<link", "@import", "url("):
        assert fetched not in html


def test_report_and_trail_into_a_missing_folder_are_one_clear_error(cli, tmp_path):
    folder = tmp_path / "nonexist"
    for command, name in (("report", "reviews.html"), ("audit-trail", "trail.csv")):
        out = folder / name
        result = cli("reviews", command, "--out", str(out))
        assert result.exit_code == 1, command
        assert f"--out {out}: the folder {folder} does not exist" in result.stderr
        assert not isinstance(result.exception, FileNotFoundError)


# ---------------------------------------------------------------- trail


def test_audit_trail_shows_everyone_asked_and_offered_the_links(
    cli, workspace, db, clock, tmp_path
):
    workspace = configure(workspace, **{"reviews.guard_delay_hours": 24})
    jane, bob = build_history(workspace, db, clock)
    carl = make_contact(
        db, clock, first_name="Carl", email="carl@example.com", phone="+15125550103"
    )
    record_event(db, carl, "invoice.paid", clock=clock, data={"invoice_id": "9"})
    record_event(db, carl, "invoice.refunded", clock=clock, data={"invoice_id": "9"})
    again = request_review(workspace, db, clock, jane)  # inside the cool-down
    assert again.status == "skipped"

    result = cli("reviews", "audit-trail", "--json")

    assert result.exit_code == 0, result.stderr
    trail = result.json()
    summary = trail["summary"]
    assert summary["asked"] == 2 and summary["asked_without_public_links"] == 0
    assert summary["answered"] == 1
    assert summary["public_links_offered_after_answer"] == 1
    assert summary["decisions_by_score"] == 0
    rows = trail["requests"]
    rated = next(r for r in rows if r["rating"] == 2)
    assert GOOGLE_LINK in rated["offered_public_links"]
    assert rated["public_links_after_answer"] == "shown on the rating page"
    reasons = sorted(r["reason_not_sent"] or "" for r in rows if not r["asked_at"])
    assert any("cool-down" in reason for reason in reasons)
    assert any("invoice.refunded" in reason for reason in reasons)
    assert not any("rating" in reason or "score" in reason for reason in reasons)

    out = tmp_path / "trail.csv"
    assert cli("reviews", "audit-trail", "--out", str(out)).exit_code == 0
    with out.open(encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(rows)
    assert {r["decided_by_score"] for r in records} == {"False"}


# ---------------------------------------------------------------- CLI


def test_platforms_command_lists_links_and_the_refused_yelp(cli, workspace):
    configure(
        workspace,
        **{
            "reviews.platforms": [
                {"kind": "google", "place_id": PLACE_ID},
                {"kind": "yelp", "url": "https://www.yelp.com/biz/bright"},
            ]
        },
    )

    result = cli("reviews", "platforms", "--json")

    assert result.exit_code == 0
    rows = {row["key"]: row for row in result.json()}
    assert rows["google"]["url"] == GOOGLE_LINK and rows["google"]["status"] == "in use"
    assert rows["yelp"]["status"] == "refused"
    assert "forbids" in result.stderr


def test_request_a_segment_and_a_dry_run(cli, workspace, db, clock):
    configure(
        workspace,
        **{"segments.patients": {"description": "tagged", "tags": ["patient"]}},
    )
    jane, bob = people(db, clock)
    make_contact(
        db, clock, first_name="Zed", email="zed@example.com", phone="+15125550109"
    )
    for contact_id in (jane, bob):
        add_tag(db, contact_id, "patient", clock=clock)

    dry = cli("reviews", "request", "--segment", "patients", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert [r["status"] for r in dry.json()] == ["would_send", "would_send"]
    assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0

    sent = cli("reviews", "request", "--segment", "patients", "--json")
    assert [r["status"] for r in sent.json()] == ["sent", "sent"]
    single = cli("reviews", "request", "bob@example.com", "--json")
    assert single.json()[0]["status"] == "skipped"
    assert "cool-down" in single.json()[0]["reason"]


def test_shipped_sequence_loads_and_a_bad_step_is_reported(workspace):
    assert "review-request" in load_sequences(workspace).active

    (workspace.sequences_dir / "bad.yaml").write_text(
        "trigger: invoice.paid\nsteps:\n  - review_request: fax\n", encoding="utf-8"
    )
    problems = [str(p) for p in load_sequences(workspace).problems]
    assert any("bad.yaml:3" in p and "fax" in p for p in problems)


def test_a_review_request_step_gated_on_ratings_is_reported(workspace):
    (workspace.sequences_dir / "gated.yaml").write_text(
        "trigger: invoice.paid\n"
        "steps:\n"
        "  - review_request: sms\n"
        "    when: {segment: happy-customers}\n",
        encoding="utf-8",
    )
    problems = [str(p) for p in load_sequences(workspace).problems]
    assert any("gated.yaml" in p and "review gating" in p for p in problems)
