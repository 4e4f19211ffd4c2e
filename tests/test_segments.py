"""Segments: the defaults, configuration problems, SQL listing and one contact."""

from __future__ import annotations

import tomllib

import pytest

from cxm_cli import clock as clocks
from cxm_cli.errors import ConfigError, NotFound
from cxm_cli.events import record_event
from cxm_cli.pipelines import ConfigPlaces, move_contact, parse_pipeline_config
from cxm_cli.segments import (
    contact_in_segment,
    contacts_in_segment,
    list_contacts,
    parse_segments,
    segment_config,
)
from cxm_cli.workspace import load_workspace


def add_contact(db, clock, name, *, source="web", tags=(), custom="{}") -> int:
    now = clocks.now_iso(clock)
    contact = (
        db["contacts"]
        .insert(
            {
                "display_name": name,
                "source": source,
                "custom": custom,
                "created_at": now,
                "updated_at": now,
            }
        )
        .last_pk
    )
    for tag in tags:
        db["contact_tags"].insert(
            {"contact_id": contact, "tag": tag, "created_at": now}
        )
    return contact


@pytest.fixture
def people(db, workspace, clock):
    """A small practice: a regular, a new prospect, an unhappy one, a lapsed one."""
    regular = add_contact(db, clock, "Rosa Regular", source="referral", tags=["vip"])
    prospect = add_contact(db, clock, "Paul Prospect", source="google")
    unhappy = add_contact(db, clock, "Uma Unhappy", source="google")
    lapsed = add_contact(db, clock, "Lars Lapsed", source="Referral", tags=["vip"])

    clock.set("2025-06-01T15:00:00Z")
    record_event(db, lapsed, "appointment.completed", clock=clock)
    record_event(db, lapsed, "invoice.paid", clock=clock, data={"amount": "120.5"})
    clock.set("2026-01-10T15:00:00Z")
    for _ in range(3):
        record_event(db, regular, "appointment.completed", clock=clock)
        record_event(db, regular, "invoice.paid", clock=clock, data={"amount": 200})
    record_event(db, unhappy, "appointment.completed", clock=clock)
    record_event(db, unhappy, "review.rated", clock=clock, data={"rating": 5})
    clock.set("2026-02-20T15:00:00Z")
    record_event(db, unhappy, "feedback.received", clock=clock, data={"rating": 2})
    clock.set("2026-03-01T15:00:00Z")
    record_event(db, prospect, "form.submitted", clock=clock, data={"form": "web"})
    record_event(db, prospect, "message.received", clock=clock)
    clock.set("2026-03-02T15:00:00Z")
    return {
        "regular": regular,
        "prospect": prospect,
        "unhappy": unhappy,
        "lapsed": lapsed,
    }


def test_default_segments(db, workspace, clock, people):
    def members(name):
        return contacts_in_segment(db, workspace, name, clock=clock)

    assert members("returning-client") == [people["regular"]]
    assert members("hot-prospect") == [people["prospect"]]
    assert members("unhappy-customer") == [people["unhappy"]]
    assert members("lapsed-6-months") == [people["lapsed"]]

    # A week later the prospect is no longer hot.
    clock.advance(days=8)
    assert members("hot-prospect") == []


def test_one_contact_agrees_with_the_listing(db, workspace, clock, people):
    for name in segment_config(workspace).segments:
        listed = set(contacts_in_segment(db, workspace, name, clock=clock))
        for contact in people.values():
            inside = contact_in_segment(db, workspace, contact, name, clock=clock)
            assert inside == (contact in listed), (name, contact)


CUSTOM_SEGMENTS = """
[[pipelines]]
name = "sales"
stages = ["new", "contacted", { name = "won", kind = "won" }]

[segments.big-spenders]
min_lifetime_value = 500

[segments.vip-referrals]
tags = ["vip"]
source = ["referral"]

[segments.worth-a-call]
any_of = ["big-spenders", "vip-referrals"]
none_of = ["gold-plan"]

[segments.gold-plan]
custom = { plan = "gold" }

[segments.new-or-contacted]
stage = ["New", "contacted"]

[segments.not-won-vips]
tags = ["vip"]
not_stage = "won"
"""


def write_segments(workspace, text):
    workspace.config_path.write_text(text, encoding="utf-8")
    reloaded = load_workspace(workspace.root)
    reloaded.open_db().close()
    return reloaded


def test_combined_conditions(db, workspace, clock, people):
    workspace = write_segments(workspace, CUSTOM_SEGMENTS)
    gold = add_contact(db, clock, "Gil Gold", custom='{"plan": "gold"}', tags=["vip"])
    db["contacts"].update(gold, {"source": "referral"})
    move_contact(db, workspace, clock, people["prospect"], "new")
    move_contact(db, workspace, clock, people["lapsed"], "won")

    def members(name):
        return contacts_in_segment(db, workspace, name, clock=clock)

    assert segment_config(workspace).problems == []
    assert members("big-spenders") == [people["regular"]]
    assert members("vip-referrals") == [people["regular"], people["lapsed"], gold]
    assert members("gold-plan") == [gold]
    assert members("worth-a-call") == [people["regular"], people["lapsed"]]
    assert members("new-or-contacted") == [people["prospect"]]
    assert members("not-won-vips") == [people["regular"], gold]


BROKEN_SEGMENTS = """
[segments.good]
tags = ["vip"]

[segments.typo]
tag = ["vip"]

[segments.bad-stage]
stage = "qualified"

[segments.loop-a]
any_of = ["loop-b"]

[segments.loop-b]
all_of = ["loop-a"]

[segments.leans-on-typo]
tags = ["vip"]
any_of = ["typo"]

[segments.bad-recent]
recent = { days = 7 }
"""


def test_broken_segments_are_reported_and_the_rest_work(db, workspace, clock, people):
    text = BROKEN_SEGMENTS
    pipelines = parse_pipeline_config({}, ConfigPlaces(""))
    config = parse_segments(tomllib.loads(text), ConfigPlaces(text), pipelines)
    lines = text.splitlines()

    assert list(config.segments) == ["good"]
    by_segment = {p.place.split()[-1]: p for p in config.problems}
    assert set(by_segment) == {
        "[segments.typo]",
        "[segments.bad-stage]",
        "[segments.loop-a]",
        "[segments.loop-b]",
        "[segments.leans-on-typo]",
        "[segments.bad-recent]",
    }
    assert lines[by_segment["[segments.typo]"].line - 1] == 'tag = ["vip"]'
    assert "unknown condition 'tag'" in by_segment["[segments.typo]"].message
    assert lines[by_segment["[segments.bad-stage]"].line - 1] == 'stage = "qualified"'
    assert "itself" in by_segment["[segments.loop-a]"].message
    assert "'typo'" in by_segment["[segments.leans-on-typo]"].message

    workspace = write_segments(workspace, text)
    assert contacts_in_segment(db, workspace, "good", clock=clock) == [
        people["regular"],
        people["lapsed"],
    ]
    with pytest.raises(ConfigError, match="cxm.toml:"):
        contacts_in_segment(db, workspace, "typo", clock=clock)
    with pytest.raises(NotFound, match="no segment named 'nope'"):
        contact_in_segment(db, workspace, people["regular"], "nope")


def test_list_contacts_filters(db, workspace, clock, people):
    move_contact(db, workspace, clock, people["prospect"], "contacted")

    vips = list_contacts(db, workspace, tags=["vip"], clock=clock)
    assert [row["id"] for row in vips] == [people["regular"], people["lapsed"]]
    assert vips[0]["tags"] == ["vip"]
    assert vips[0]["name"] == "Rosa Regular"

    both = list_contacts(
        db, workspace, segment="lapsed-6-months", tags=["vip"], clock=clock
    )
    assert [row["id"] for row in both] == [people["lapsed"]]

    staged = list_contacts(db, workspace, stage="Contacted", clock=clock)
    assert [(row["id"], row["stage"]) for row in staged] == [
        (people["prospect"], "contacted")
    ]


def test_contacts_list_command(db, workspace, clock, people, cli):
    result = cli("contacts", "list", "--segment", "returning-client", "--json")
    assert result.exit_code == 0, result.stderr
    assert [row["id"] for row in result.json()] == [people["regular"]]

    plain = cli("contacts", "list", "--tag", "vip")
    assert plain.exit_code == 0
    lines = plain.stdout.strip().splitlines()
    assert lines[0].split("\t")[:2] == ["id", "name"]
    assert len(lines) == 3

    missing = cli("contacts", "list", "--segment", "nobody")
    assert missing.exit_code != 0
    assert "no segment named 'nobody'" in missing.stderr

    segments = cli("contacts", "segments", "--json")
    assert segments.exit_code == 0
    counts = {row["segment"]: row["contacts"] for row in segments.json()}
    assert counts == {
        "hot-prospect": 1,
        "lapsed-6-months": 1,
        "returning-client": 1,
        "unhappy-customer": 1,
    }
