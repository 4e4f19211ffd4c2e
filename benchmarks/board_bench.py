"""How long the pipeline board takes for a workspace of 10,000 contacts.

Builds a throw-away workspace (contacts spread over the default pipeline's
stages, deal values, paid invoices), then measures in one run:

- building the board data and drawing it for an 80-column terminal,
- the same with ``--json`` data (every contact, no drawing),
- the value report per source,
- ``cxm pipeline board`` end to end as a user runs it (includes Python start-up).

Target: the board well under a second. Run: .venv/bin/python benchmarks/board_bench.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

from rich.console import Console

from cxm_cli import clock as clocks
from cxm_cli.board import build_board, render_board, values_report
from cxm_cli.clock import FakeClock
from cxm_cli.pipelines import pipeline_config
from cxm_cli.store import dumps, write_transaction
from cxm_cli.workspace import init_workspace, load_workspace

CONTACTS = 10_000
RUNS = 7


def populate(workspace, clock, count: int) -> None:
    random.seed(6)
    stages = [stage.name for stage in pipeline_config(workspace).pipeline().stages]
    now = clock.now()
    db = workspace.open_db()
    contacts, placed, paid = [], [], []
    for number in range(1, count + 1):
        created = clocks.iso(now - timedelta(days=random.randint(0, 400)))
        contacts.append(
            {
                "id": number,
                "display_name": f"Contact {number} {random.choice('ABCDEFGH')}ayes",
                "source": random.choice(["google", "facebook", "referral", "walk-in"]),
                "custom": "{}",
                "created_at": created,
                "updated_at": created,
            }
        )
        entered = clocks.iso(now - timedelta(hours=random.randint(1, 24 * 120)))
        placed.append(
            {
                "contact_id": number,
                "pipeline": "sales",
                "stage": random.choice(stages),
                "entered_at": entered,
                "value": random.choice([None, 250, 900, 1800, 4200]),
                "moved_by": "bench",
                "updated_at": entered,
            }
        )
        if number % 3 == 0:
            paid.append(
                {
                    "contact_id": number,
                    "type": "invoice.paid",
                    "at": entered,
                    "data": dumps({"amount": random.choice([90, 180, 1200])}),
                    "source": "bench",
                    "recorded_at": entered,
                }
            )
    with write_transaction(db):
        db["contacts"].insert_all(contacts, batch_size=1000)
        db["contact_stages"].insert_all(placed, batch_size=1000)
        db["events"].insert_all(paid, batch_size=1000)
    db.close()


def timed(action) -> tuple[float, object]:
    times, result = [], None
    for _ in range(RUNS):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    clock = FakeClock("2026-03-02T15:00:00Z")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ws"
        init_workspace(root, business_name="Bench Dental")
        workspace = load_workspace(root)
        populate(workspace, clock, CONTACTS)
        db = workspace.open_db()

        def board_80():
            out = StringIO()
            board = build_board(db, workspace, clock)
            Console(width=80, file=out).print(render_board(board, 80))
            return out.getvalue()

        def board_json():
            return json.dumps(build_board(db, workspace, clock, limit=None).to_dict())

        drawn_seconds, drawing = timed(board_80)
        json_seconds, _ = timed(board_json)
        values_seconds, _ = timed(lambda: values_report(db, workspace, by="source"))
        db.close()

        env = {**os.environ, "CXM_WORKSPACE": str(root), "COLUMNS": "80"}
        cli = [sys.executable, "-m", "cxm_cli", "pipeline", "board"]
        started = time.perf_counter()
        subprocess.run(cli, env=env, check=True, capture_output=True)
        cli_seconds = time.perf_counter() - started

    widest = max(len(line) for line in str(drawing).splitlines())
    print(f"board bench: {CONTACTS:,} contacts, median of {RUNS} runs")
    print(
        f"  board data + drawing at 80 columns: {drawn_seconds * 1000:7.1f} ms"
        f"  (widest line {widest} columns)"
    )
    print(f"  board as JSON, every contact:       {json_seconds * 1000:7.1f} ms")
    print(f"  values per source:                  {values_seconds * 1000:7.1f} ms")
    print(
        f"  `cxm pipeline board` end to end:    {cli_seconds * 1000:7.1f} ms"
        "  (one run, includes Python start-up)"
    )
    target_met = drawn_seconds < 0.5
    print(f"  target (board well under a second): {'met' if target_met else 'MISSED'}")
    return 0 if target_met else 1


if __name__ == "__main__":
    sys.exit(main())
