"""The board, the stale list and values; the board read on an 80-column terminal."""

from __future__ import annotations

from io import StringIO

import pytest
from rich.console import Console

from cxm_cli.board import (
    build_board,
    contact_values,
    render_board,
    stale_contacts,
    values_report,
)
from cxm_cli.errors import InputError
from cxm_cli.events import record_event
from cxm_cli.pipelines import move_contact
from tests.support.contacts import add_contact


@pytest.fixture
def practice(db, workspace, clock):
    """Nine people spread over the pipeline at different ages."""
    placed = {}
    plan = [
        ("Ana Lima", "google", "new", None, 20),
        ("Ben Okafor", "google", "new", None, 1),
        ("Carla Mendes-Villanueva de la Fuente", "referral", "contacted", None, 3),
        ("Dev Patel", "referral", "consult booked", 1500, 16),
        ("Eve Martin", "google", "proposal sent", 4200, 2),
        ("Finn Walsh", "facebook", "active client", 900, 40),
        ("Gia Rossi", "facebook", "follow-up", None, 61),
        ("Hal Berg", "referral", "won", 3000, 100),
        ("Ivy Chen", "google", "lost", None, 90),
    ]
    start = clock.now()
    for name, source, stage, value, age_days in plan:
        contact = add_contact(db, clock, name, source)
        clock.set(start)
        clock.advance(days=-age_days)
        move_contact(db, workspace, clock, contact, stage, value=value, by="test")
        placed[name] = contact
    clock.set(start)
    record_event(
        db, placed["Finn Walsh"], "invoice.paid", clock=clock, data={"amount": 900}
    )
    record_event(
        db, placed["Hal Berg"], "invoice.paid", clock=clock, data={"amount": 2000.5}
    )
    record_event(
        db, placed["Hal Berg"], "invoice.paid", clock=clock, data={"amount": 1000}
    )
    return placed


def test_board_counts_values_and_stale_marks(db, workspace, clock, practice):
    board = build_board(db, workspace, clock)

    columns = {column.stage: column for column in board.columns}
    assert [c.stage for c in board.columns][:2] == ["new", "contacted"]
    assert columns["new"].count == 2
    assert [card.name for card in columns["new"].cards] == ["Ana Lima", "Ben Okafor"]
    assert [card.days_in_stage for card in columns["new"].cards] == [20, 1]
    assert [card.stale for card in columns["new"].cards] == [True, False]
    assert columns["new"].stale_count == 1
    assert columns["consult booked"].total_value == 1500
    assert columns["consult booked"].stale_count == 1
    # follow-up waits 60 days before it is stale; won and lost never are.
    assert columns["follow-up"].stale_after_days == 60
    assert columns["follow-up"].cards[0].stale is True
    assert columns["won"].cards[0].stale is False
    assert columns["lost"].stale_count == 0
    assert board.count == 9
    assert board.total_value == 1500 + 4200 + 900 + 3000


def test_board_limit_and_json_shape(db, workspace, clock, practice):
    board = build_board(db, workspace, clock, limit=1)
    new = board.columns[0]
    assert len(new.cards) == 1 and new.hidden == 1

    data = board.to_dict()
    assert data["pipeline"] == "sales"
    assert data["stages"][0]["hidden"] == 1
    assert set(data["stages"][0]["cards"][0]) == {
        "contact_id",
        "name",
        "value",
        "entered_at",
        "days_in_stage",
        "stale",
    }


def draw(board, width: int) -> str:
    out = StringIO()
    console = Console(width=width, file=out, color_system=None, legacy_windows=False)
    console.print(render_board(board, width))
    return out.getvalue()


def test_board_reads_on_an_80_column_terminal(db, workspace, clock, practice):
    board = build_board(db, workspace, clock)
    text = draw(board, 80)
    lines = text.splitlines()

    assert max(len(line) for line in lines) <= 80
    for stage in (
        "new",
        "contacted",
        "consult booked",
        "proposal sent",
        "active client",
        "follow-up",
        "won",
        "lost",
    ):
        assert f" {stage} " in text, stage
    # Stages sit side by side: several stage titles share a line.
    assert any(line.count("╭") >= 3 for line in lines)
    # Names fit or are cut with an ellipsis, never wrapped onto a second line.
    assert "Ana Lima" in text
    assert "Carla Mendes" in text and "…" in text
    assert "Fuente" not in text
    # Age in the stage, stale ones marked, counts and values in the subtitle.
    assert "20d!" in text and " 1d " in text
    assert "1 · 1.5k · 1!" in text
    assert "! stale" in text


def test_board_on_a_wide_terminal_is_one_row(db, workspace, clock, practice):
    text = draw(build_board(db, workspace, clock), 200)
    first_row = next(line for line in text.splitlines() if "╭" in line)
    assert first_row.count("╭") == 8


def test_board_shows_contacts_in_a_stage_removed_from_the_config(
    db, workspace, clock, practice
):
    db.execute(
        "UPDATE contact_stages SET stage = 'qualified' WHERE contact_id = ?",
        [practice["Ana Lima"]],
    )
    board = build_board(db, workspace, clock)
    assert board.columns[-1].stage == "qualified"
    assert board.columns[-1].kind == "removed"
    assert board.count == 9


def test_board_command(db, workspace, clock, practice, cli):
    result = cli("pipeline", "board")
    assert result.exit_code == 0, result.stderr
    assert "consult booked" in result.stdout

    as_json = cli("pipeline", "board", "--json")
    assert as_json.json()["count"] == 9


def test_stale_listing(db, workspace, clock, practice):
    default = stale_contacts(db, workspace, clock)
    assert [row["name"] for row in default] == [
        "Gia Rossi",
        "Finn Walsh",
        "Ana Lima",
        "Dev Patel",
    ]
    assert default[0]["days_in_stage"] == 61

    two_days = stale_contacts(db, workspace, clock, days=2)
    names = [row["name"] for row in two_days]
    assert "Eve Martin" in names and "Ben Okafor" not in names
    assert "Hal Berg" not in names  # won is never stale
    with pytest.raises(InputError):
        stale_contacts(db, workspace, clock, days=-1)


def test_stale_command(db, workspace, clock, practice, cli):
    result = cli("pipeline", "stale", "--days", "30", "--json")
    assert result.exit_code == 0, result.stderr
    assert [row["name"] for row in result.json()] == ["Gia Rossi", "Finn Walsh"]


def test_values_per_stage_source_and_contact(db, workspace, clock, practice):
    by_stage = {row["stage"]: row for row in values_report(db, workspace, by="stage")}
    assert by_stage["won"]["lifetime_value"] == 3000.5
    assert by_stage["won"]["deal_value"] == 3000
    assert by_stage["active client"]["paying_contacts"] == 1
    assert list(by_stage)[:3] == ["new", "contacted", "consult booked"]

    by_source = values_report(db, workspace, by="source")
    assert by_source[0]["source"] == "referral"
    assert by_source[0]["lifetime_value"] == 3000.5
    assert by_source[0]["contacts"] == 3
    assert by_source[0]["deal_value"] == 4500

    by_contact = values_report(db, workspace, by="contact", limit=2)
    assert [row["name"] for row in by_contact] == ["Hal Berg", "Finn Walsh"]

    assert contact_values(db, practice["Hal Berg"]) == {
        "contact_id": practice["Hal Berg"],
        "deal_values": {"sales": 3000.0},
        "lifetime_value": 3000.5,
    }
    with pytest.raises(InputError, match="--by"):
        values_report(db, workspace, by="colour")


def test_values_command(db, workspace, clock, practice, cli):
    result = cli("pipeline", "values", "--by", "source", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()[0]["source"] == "referral"

    listing = cli("pipeline", "list", "--json")
    assert listing.exit_code == 0
    assert listing.json()["stages"][0]["stage"] == "new"
