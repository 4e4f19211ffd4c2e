"""How long ``cxm audit`` takes over a workspace of one million events.

Builds a throw-away workspace with ``init_workspace`` and fills it directly with
``executemany`` (no importer, no hooks): about 60,000 contacts with realistic
histories over two years (lead or form, replies, conversations, pipeline
moves, appointments with reminders and no-shows, payments, review requests
and ratings, repeat visits), interleaved in time as a real timeline is, with a
``messages`` row for every message event. Then it times, in one run:

- the audit itself (``run_audit``: the ordered pass and every measure), three
  times, reporting the median and the best,
- rendering the HTML report from it,
- ``cxm audit --json`` end to end as a user runs it (includes Python start-up).

Target: the audit of 1,000,000 events under ten seconds.
Run: .venv/bin/python benchmarks/audit_bench.py [--events N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cxm_cli import clock as clocks
from cxm_cli.audit import run_audit
from cxm_cli.audit.options import make_options
from cxm_cli.audit.render_html import render_html
from cxm_cli.clock import FakeClock
from cxm_cli.store import dumps
from cxm_cli.workspace import init_workspace, load_workspace

EVENTS = 1_000_000
RUNS = 3
NOW = datetime(2026, 3, 1, tzinfo=UTC)
START = NOW - timedelta(days=730)
SOURCES = ["web", "facebook", "google", "referral", "walk-in"]
STAGES = ["new", "contacted", "consult booked", "proposal sent", "active client"]


class Timeline:
    """One contact's events, generated as a plausible history."""

    def __init__(self, rng: random.Random, contact_id: int):
        self.rng = rng
        self.contact_id = contact_id
        self.events: list[tuple] = []  # (at, type, data, message or None)

    def add(self, at: datetime, kind: str, data=None, message=None):
        if at < NOW:
            self.events.append((at, kind, data or {}, message))

    def message(self, at: datetime, direction: str, channel: str):
        kind = "message.received" if direction == "inbound" else "message.sent"
        self.add(
            at,
            kind,
            {"channel": channel, "automated": direction != "inbound"},
            (direction, channel),
        )

    def build(self) -> list[tuple]:
        rng = self.rng
        source = rng.choice(SOURCES)
        start = START + timedelta(seconds=rng.uniform(0, 720 * 86400))
        channel = rng.choice(["sms", "email"])
        if rng.random() < 0.5:
            self.add(start, "form.submitted", {"form": "contact", "source": source})
        else:
            self.add(start, "lead.created", {"source": source})
        self.stage(start, None, "new")

        # Speed to lead: most answered fast, some slow, some never.
        at = start
        replied = rng.random() < 0.88
        if replied:
            at = start + timedelta(seconds=rng.lognormvariate(6.5, 2.0))
            self.message(at, "outbound", channel)
            self.stage(at, "new", "contacted")
        touches = rng.choice([0, 1, 1, 2, 3, 4]) if replied else 0
        for _ in range(touches):
            at += timedelta(hours=rng.uniform(20, 80))
            self.message(at, "outbound", rng.choice(["sms", "email"]))
        if not replied or rng.random() < 0.35:
            return self.events

        # A conversation back and forth; sometimes the last word is theirs.
        for _ in range(rng.randint(1, 4)):
            at += timedelta(minutes=rng.uniform(5, 600))
            self.message(at, "inbound", channel)
            if rng.random() < 0.9:
                at += timedelta(minutes=rng.uniform(1, 240))
                self.message(at, "outbound", channel)

        visits = rng.choice([1, 1, 1, 2, 3, 5])
        stage = "contacted"
        for visit in range(visits):
            booked = at + timedelta(hours=rng.uniform(1, 72))
            starts = booked + timedelta(days=rng.uniform(1, 14))
            appointment = f"a{self.contact_id}-{visit}"
            self.add(
                booked,
                "appointment.booked",
                {"appointment_id": appointment, "starts_at": clocks.iso(starts)},
            )
            if visit == 0:
                self.stage(booked, stage, "consult booked")
                stage = "consult booked"
            if rng.random() < 0.7:
                self.message(
                    starts - timedelta(hours=rng.uniform(2, 30)), "outbound", "sms"
                )
            if rng.random() < 0.12:
                self.add(starts, "appointment.no_show", {"appointment_id": appointment})
                at = starts
                continue
            self.add(
                starts + timedelta(hours=1),
                "appointment.completed",
                {"appointment_id": appointment},
            )
            self.add(
                starts + timedelta(hours=1),
                "invoice.paid",
                {"amount": round(rng.uniform(60, 900), 2), "currency": "USD"},
            )
            if visit == 0:
                self.stage(starts, stage, "active client")
                stage = "active client"
            if rng.random() < 0.6:
                request = f"r{self.contact_id}-{visit}"
                asked = starts + timedelta(hours=3)
                self.add(
                    asked,
                    "review.requested",
                    {"request_id": request, "channel": "sms", "platforms": ["google"]},
                )
                if rng.random() < 0.4:
                    self.add(
                        asked + timedelta(hours=2),
                        "review.rated",
                        {"request_id": request, "rating": rng.choice([3, 4, 5, 5])},
                    )
                    if rng.random() < 0.5:
                        self.add(
                            asked + timedelta(days=1),
                            "review.received",
                            {"platform": "google", "rating": 5},
                        )
            at = starts + timedelta(days=rng.uniform(30, 200))
        return self.events

    def stage(self, at, old, new):
        self.add(
            at,
            "stage.changed",
            {
                "pipeline": "sales",
                "from": old,
                "to": new,
                "by": "rule",
                "reason": "bench",
            },
        )


def build_workspace(root: Path, events_wanted: int, seed: int = 7) -> dict[str, int]:
    init_workspace(root, business_name="Benchmark Dental", timezone="America/Chicago")
    workspace = load_workspace(root)
    db = workspace.open_db()
    rng = random.Random(seed)
    contacts, timeline = [], []
    contact_id = 0
    while len(timeline) < events_wanted:
        contact_id += 1
        contacts.append(contact_id)
        for at, kind, data, message in Timeline(rng, contact_id).build():
            timeline.append((at, contact_id, kind, data, message))
    timeline = timeline[:events_wanted]
    timeline.sort(key=lambda item: item[0])  # interleaved, as a real timeline is

    now = clocks.iso(NOW)
    event_rows, message_rows = [], []
    for event_id, (at, cid, kind, data, message) in enumerate(timeline, start=1):
        stamp = clocks.iso(at)
        if message is not None:
            message_id = len(message_rows) + 1
            data = {**data, "message_id": message_id}
            direction, channel = message
            message_rows.append(
                (
                    message_id,
                    cid,
                    event_id,
                    channel,
                    direction,
                    "Hello there",
                    "received" if direction == "inbound" else "delivered",
                    stamp,
                )
            )
        event_rows.append((event_id, cid, kind, stamp, dumps(data), "bench", stamp))

    conn = db.conn
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO contacts (id, display_name, email, source, created_at, updated_at)"
        " VALUES (?, ?, ?, NULL, ?, ?)",
        [(cid, f"Contact {cid}", f"c{cid}@example.com", now, now) for cid in contacts],
    )
    conn.executemany(
        "INSERT INTO events (id, contact_id, type, at, data, source, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        event_rows,
    )
    conn.executemany(
        "INSERT INTO messages (id, contact_id, event_id, channel, direction, body,"
        " status, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        message_rows,
    )
    conn.execute("COMMIT")
    db.close()
    return {
        "contacts": len(contacts),
        "events": len(event_rows),
        "messages": len(message_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cxm-audit-bench-") as scratch:
        root = Path(scratch) / "ws"
        started = time.perf_counter()
        sizes = build_workspace(root, args.events)
        print(
            f"built workspace: {sizes['events']:,} events, {sizes['contacts']:,} "
            f"contacts, {sizes['messages']:,} messages "
            f"({time.perf_counter() - started:.1f} s)"
        )

        workspace = load_workspace(root)
        db = workspace.open_db()
        clock = FakeClock(NOW)
        options = make_options(
            clock=clock,
            since="2025-03-01",
            until="2026-02-28",
            timezone=workspace.timezone,
        )
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            audit = run_audit(db, options, clock=clock, workspace=workspace)
            timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        html = render_html(audit)
        render_seconds = time.perf_counter() - started
        db.close()

        started = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cxm_cli",
                "--workspace",
                str(root),
                "audit",
                "--since",
                "2025-03-01",
                "--until",
                "2026-02-28",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        cli_seconds = time.perf_counter() - started
        json.loads(result.stdout)

    leads = audit["speed_to_lead"]["overall"]["leads"]
    print(
        f"audit of {sizes['events']:,} events: median "
        f"{statistics.median(timings):.1f} s, best {min(timings):.1f} s of "
        f"{len(timings)} runs (target under 10 s; "
        f"{leads:,} leads in the period, {len(audit['findings'])} findings)"
    )
    print(f"HTML report: {render_seconds:.2f} s, {len(html) / 1024:.0f} KiB")
    print(f"cxm audit --json end to end: {cli_seconds:.1f} s")


if __name__ == "__main__":
    main()
