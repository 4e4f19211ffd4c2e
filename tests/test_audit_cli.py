"""``cxm audit`` as a user runs it: JSON, Markdown, HTML, the terminal, errors."""

from __future__ import annotations

import re
from io import StringIO

from rich.console import Console

from cxm_cli.audit import run_audit
from cxm_cli.audit.options import make_options, parse_bound
from cxm_cli.audit.render_terminal import print_audit
from cxm_cli.audit.stats import median, percentile
from tests.test_audit_helpers import SINCE, UNTIL, build_known_history

PERIOD = ("--since", SINCE, "--until", UNTIL)


def test_json_output_is_the_audit(cli, db, clock):
    build_known_history(db, clock)
    result = cli("audit", *PERIOD, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["report"]["business"] == "Bright Smile Dental"
    assert report["report"]["since"] == "2026-02-01T00:00:00.000000Z"
    assert report["speed_to_lead"]["overall"]["median_seconds"] == 210.0
    assert len(report["findings"]) == 5


def test_markdown_file(cli, db, clock, tmp_path):
    build_known_history(db, clock)
    out = tmp_path / "audit.md"
    result = cli("audit", *PERIOD, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"wrote {out} (5 findings)" in result.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Customer experience audit: Bright Smile Dental")
    assert '1. **Most people stop at "booked" (lead journey)' in text
    assert "People (2): C3, C4" in text
    assert "| Source | Leads | Median | 90th pct |" in text
    assert "| web | 4 | 1.0 hours | 25 hours | 50% | 50% | 0 (0%) |" in text
    for heading in (
        "Speed to lead",
        "Unanswered conversations",
        "Follow-up depth",
        "Funnel: intake",
        "Appointments",
        "Reviews",
        "Attribution",
        "Retention",
    ):
        assert f"\n## {heading}\n" in text


def test_piped_output_is_markdown(cli, db, clock):
    build_known_history(db, clock)
    result = cli("audit", *PERIOD)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# Customer experience audit")
    assert "## What to fix first" in result.stdout


def test_html_file_loads_nothing_from_anywhere(cli, db, clock, tmp_path):
    build_known_history(db, clock)
    out = tmp_path / "audit.html"
    result = cli("audit", *PERIOD, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    assert "default-src 'none'" in html
    assert not re.search(r"\b(src|href)\s*=", html)
    assert "url(" not in html and "@import" not in html
    # The only URL is the SVG namespace, which browsers never fetch.
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {
        "http://www.w3.org/2000/svg"
    }
    assert html.count('<svg class="chart"') == 10
    assert "@media print" in html


def test_terminal_output_fits_80_columns(db, clock, workspace):
    build_known_history(db, clock)
    options = make_options(clock=clock, since=SINCE, until=UNTIL, timezone="UTC")
    audit = run_audit(db, options, clock=clock, workspace=workspace)
    buffer = StringIO()
    print_audit(audit, Console(file=buffer, width=80, force_terminal=False))
    text = buffer.getvalue()
    assert "What to fix first" in text
    assert "Time to first reply" in text
    assert "\u2588" in text  # the bar charts
    assert max(len(line) for line in text.splitlines()) <= 80


def test_unknown_out_suffix_is_refused(cli, tmp_path):
    result = cli("audit", "--out", str(tmp_path / "audit.txt"))
    assert result.exit_code == 1
    assert "name the file .md, .html or .json" in result.stderr
    assert not (tmp_path / "audit.txt").exists()


def test_out_into_a_missing_folder_is_one_clear_error(cli, tmp_path):
    out = tmp_path / "nonexist" / "dir" / "a.html"
    result = cli("audit", "--out", str(out))
    assert result.exit_code == 1
    assert f"--out {out}: the folder {out.parent} does not exist" in result.stderr
    assert not isinstance(result.exception, FileNotFoundError)


def test_unreadable_period_is_refused(cli):
    result = cli("audit", "--since", "last tuesday")
    assert result.exit_code == 1
    assert "--since: cannot read 'last tuesday' as a date" in result.stderr
    result = cli("audit", "--since", "2026-03-01", "--until", "2026-02-01")
    assert result.exit_code == 1
    assert "must be before" in result.stderr


def test_keep_workspace_needs_exports(cli, tmp_path):
    result = cli("audit", "--keep-workspace", str(tmp_path / "kept"))
    assert result.exit_code == 1
    assert "only applies to an audit of exports" in result.stderr


def test_period_bounds_read_as_people_write_them(clock):
    from zoneinfo import ZoneInfo

    chicago = ZoneInfo("America/Chicago")
    now = clock.now()
    # A bare date is local midnight; as an end it includes the whole day.
    assert parse_bound("2026-02-01", chicago, now=now, end=False) == (
        "2026-02-01T06:00:00.000000Z"
    )
    assert parse_bound("2026-02-28", chicago, now=now, end=True) == (
        "2026-03-01T06:00:00.000000Z"
    )
    assert parse_bound("2026-02-01T09:30", chicago, now=now, end=False) == (
        "2026-02-01T15:30:00.000000Z"
    )
    assert parse_bound("30d", chicago, now=now, end=False) == (
        "2026-01-31T15:00:00.000000Z"
    )
    assert parse_bound("2w", chicago, now=now, end=False) == (
        "2026-02-16T15:00:00.000000Z"
    )


def test_median_and_percentile_definitions():
    assert median([]) is None
    assert median([5, 1, 3]) == 3
    assert median([4, 1, 3, 2]) == 2.5
    assert percentile([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 90) == 90
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 90) == 10
    assert percentile([7], 90) == 7
