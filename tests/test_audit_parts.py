"""The audit's pieces on their own: reading histories, funnel order, real exports."""

from __future__ import annotations

import pytest

from cxm_cli.audit.funnel import Funnel
from cxm_cli.audit.history import ContactHistory, build_history
from cxm_cli.audit.options import make_options
from tests.conftest import CORPUS_DIR

AS_OF = "2026-03-01T00:00:00.000000Z"


def t(day: int, hour: int = 9) -> str:
    return f"2026-02-{day:02d}T{hour:02d}:00:00.000000Z"


def event(at, kind, f1=None, f2=None, f3=None, undated=None):
    return (1, at, kind, f1, f2, f3, undated)


def test_outcomes_without_ids_close_the_oldest_open_booking():
    history = build_history(
        1,
        [],
        [
            event(t(1), "appointment.booked", None, t(5)),
            event(t(2), "appointment.booked", None, t(9)),
            event(t(5, 10), "appointment.completed"),
            event(t(9, 10), "appointment.no_show"),
            event(t(10), "appointment.completed", "walk-in"),
        ],
        None,
        AS_OF,
    )
    assert [(a.booked_at, a.starts_at, a.outcome) for a in history.appointments] == [
        (t(1), t(5), "completed"),
        (t(2), t(9), "no_show"),
        (None, None, "completed"),  # an outcome nobody booked is still counted
    ]


def test_a_rebooking_with_the_same_id_is_a_reschedule():
    history = build_history(
        1,
        [],
        [
            event(t(1), "appointment.booked", "a1", t(5)),
            event(t(3), "appointment.booked", "a1", t(8)),
            event(t(8, 10), "appointment.completed", "a1"),
        ],
        None,
        AS_OF,
    )
    assert len(history.appointments) == 1
    assert history.appointments[0].starts_at == t(8)
    assert history.appointments[0].outcome == "completed"


def test_lead_moments():
    history = build_history(
        1,
        [(1, t(4), "inbound", "sms")],
        [
            # Imported without a time of its own: only its source counts.
            event(t(20), "lead.created", "google", None, None, 1),
            event(t(6), "form.submitted", "web", None, None, 0),
        ],
        "walk-in",
        AS_OF,
    )
    assert (history.first_inbound_at, history.channel) == (t(4), "sms")
    assert history.source == "google"

    later = build_history(
        1,
        [],
        # Recorded after the period, with an export time inside it.
        [event("2026-03-05T09:00:00.000000Z", "lead.created", "meta", t(7), None, 1)],
        None,
        AS_OF,
    )
    assert (later.first_inbound_at, later.channel, later.source) == (
        t(7),
        "lead",
        "meta",
    )


def test_funnel_follows_the_configured_stage_order(clock):
    options = make_options(clock=clock, since="2026-02-01", until="2026-02-28")
    funnel = Funnel(
        options,
        {
            "Sales": [
                ("new", "open"),
                ("quoted", "open"),
                ("won", "won"),
                ("lost", "lost"),
            ]
        },
    )
    paths = {
        1: ["new", "quoted", "won"],
        2: ["new", "lost"],
        3: ["quoted", "lost"],  # straight to quoted: passes "new"
        4: ["new"],
    }
    for contact_id, stages in paths.items():
        history = ContactHistory(contact_id, source="web")
        previous = None
        for day, stage in enumerate(stages, start=2):
            history.stage_moves.append((t(day), "sales", previous, stage))
            previous = stage
        funnel.add(history)

    (sales,) = funnel.result()["pipelines"]
    assert sales["pipeline"] == "sales"
    assert [(s["stage"], s["kind"], s["reached"]) for s in sales["stages"]] == [
        ("new", "open", 4),
        ("quoted", "open", 2),
        ("won", "won", 1),
        ("lost", "lost", 2),
    ]
    assert [s["stopped_here"] for s in sales["stages"][:3]] == [2, 1, 0]
    assert sales["biggest_leak"]["contact_ids"] == [2, 4]
    assert sales["overall"]["lost"] == 2


@pytest.mark.skipif(not CORPUS_DIR.is_dir(), reason="needs the shared corpus")
def test_meta_lead_ads_export_times_speed_to_lead_from_the_first_submission(cli):
    result = cli(
        "audit",
        "--leads",
        str(CORPUS_DIR / "10-meta-lead-ads-download-utf16-tab.csv"),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    speed = report["speed_to_lead"]
    # 8 records: 6 contacts (r4 merged into r3), the testing-tool row rejected.
    assert speed["overall"]["leads"] == 6
    assert speed["overall"]["never"] == 6
    rosa = [
        row for row in speed["leads"] if row["inbound_at"].startswith("2024-03-05T16")
    ]
    assert [row["inbound_at"] for row in rosa] == ["2024-03-05T16:03:40.000000Z"]
    (leads_file,) = report["report"]["source"]["files"]
    assert (leads_file["created"], leads_file["rejected"]) == (6, 1)
    assert leads_file["rejects"][0]["row"] == "7"
    assert "row 7: test lead from the Lead Ads testing tool" in result.stderr


@pytest.mark.skipif(not CORPUS_DIR.is_dir(), reason="needs the shared corpus")
def test_an_address_book_export_has_no_leads_to_time(cli):
    result = cli(
        "audit", "--leads", str(CORPUS_DIR / "01-google-contacts.csv"), "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    # No creation times: nobody has an inbound moment to answer.
    assert report["speed_to_lead"]["overall"]["leads"] == 0
    assert report["report"]["source"]["files"][0]["created"] == 11
