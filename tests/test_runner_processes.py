"""Real runner processes: two at once, kill -9 mid-batch, SIGTERM.

Each step is one text through the outbox channel; afterwards every due step
must be done, and each must have exactly one message recorded as sent.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter

import pytest

from cxm_cli.channels.outbox import read_texts, texts_files
from cxm_cli.clock import SystemClock
from cxm_cli.events import record_event
from cxm_cli.store import write_transaction
from tests.support.engine import midday_zone, only_sequences
from tests.support.fixtures import make_contact, update_settings

pytestmark = pytest.mark.slow

ONE_TEXT = """
trigger: lead.created
steps:
  - send: sms
    text: "Hello {{ first_name }}, thanks for your enquiry."
"""


def _cxm(workspace, *args: str) -> list[str]:
    return [sys.executable, "-m", "cxm_cli", "--workspace", str(workspace.root), *args]


@pytest.fixture
def busy_workspace(workspace):
    """A workspace with ``COUNT`` contacts, each with one text due now."""
    only_sequences(workspace, hello=ONE_TEXT)
    # Every contact is where it is about noon now: nothing is deferred.
    workspace = update_settings(workspace, {"runner.batch_size": 10})
    db = workspace.open_db()
    clock = SystemClock()
    zone = midday_zone()
    with write_transaction(db):
        for index in range(COUNT):
            contact_id = make_contact(
                db,
                clock,
                email=f"p{index}@example.com",
                phone=f"+1512555{index:04d}",
                timezone=zone,
            )
            record_event(db, contact_id, "lead.created", clock=clock)
    db.close()
    return workspace


COUNT = 200


def _text_lines_per_message(workspace) -> Counter:
    """Whole text lines per message id, as written (not deduplicated)."""
    counts: Counter = Counter()
    for path in texts_files(workspace):
        for line in path.read_bytes().splitlines():
            try:
                counts[json.loads(line)["message_id"]] += 1
            except ValueError:
                continue  # a torn line a killed runner left
    return counts


def _check_exactly_once(workspace, *, kills: int = 0) -> dict[str, int]:
    db = workspace.open_db()
    try:
        statuses = Counter(
            row[0] for row in db.execute("SELECT status FROM due_steps").fetchall()
        )
        assert statuses == {"done": COUNT}, statuses
        sent = Counter(
            row[0]
            for row in db.execute(
                "SELECT due_step_id FROM messages WHERE status = 'sent'"
            ).fetchall()
        )
        assert len(sent) == COUNT and set(sent.values()) == {1}
        # A message left 'sending' is one that was in flight when a runner died.
        in_flight = db.execute(
            "SELECT COUNT(*) FROM messages WHERE status = 'sending'"
        ).fetchone()[0]
        assert in_flight <= kills
        # Texts are lines of texts.jsonl, one per message id: count per contact.
        files = Counter(text["contact_id"] for text in read_texts(workspace))
        assert len(files) == COUNT
        extra = sum(count - 1 for count in files.values())
        assert extra <= kills and max(files.values()) <= 2
        # A runner taking over a dead one's message looks before it appends.
        assert set(_text_lines_per_message(workspace).values()) == {1}
        claimed_by = Counter(
            row[0]
            for row in db.execute(
                "SELECT claimed_by FROM due_steps WHERE claimed_by IS NOT NULL"
            ).fetchall()
        )
        return {"runners": len(claimed_by), "duplicates": extra}
    finally:
        db.close()


@pytest.mark.parametrize("concurrent", [True, False])
def test_two_runners_at_once_send_each_step_exactly_once(busy_workspace, concurrent):
    args = ["run", "--once", *(["--concurrent"] if concurrent else [])]
    processes = [
        subprocess.Popen(
            _cxm(busy_workspace, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=240) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr

    split = _check_exactly_once(busy_workspace)
    lines = sum(len(stdout.splitlines()) for stdout, _ in outputs)
    assert lines == COUNT
    if not concurrent:
        # The runner lease: one of them did everything; the other stood down
        # ("holds the lease") or started after the first had finished.
        assert split["runners"] == 1


def test_kill_9_at_many_points_loses_nothing_and_repeats_at_most_in_flight(
    busy_workspace,
):
    rng = random.Random(20260302)
    kills = 0
    # Kill right after start, and after 1..40 finished steps, several times.
    for stop_after in [0, *sorted(rng.sample(range(1, 40), 7))]:
        process = subprocess.Popen(
            _cxm(busy_workspace, "run", "--once"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        seen = 0
        while seen < stop_after:
            if not process.stdout.readline():
                break
            seen += 1
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()
        kills += 1

    final = subprocess.run(
        _cxm(busy_workspace, "run", "--once"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert final.returncode == 0, final.stderr
    _check_exactly_once(busy_workspace, kills=kills)


def test_sigterm_lets_the_current_step_finish_and_hands_back_the_rest(
    busy_workspace,
):
    process = subprocess.Popen(
        _cxm(busy_workspace, "run", "--interval", "3600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = _first_line(process)
    assert first.startswith("sent\t")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "stopping after the current step" in stderr

    db = busy_workspace.open_db()
    try:
        statuses = Counter(
            row[0] for row in db.execute("SELECT status FROM due_steps").fetchall()
        )
        lease = db.execute("SELECT COUNT(*) FROM runner_leases").fetchone()[0]
        unfinished = db.execute(
            "SELECT COUNT(*) FROM messages WHERE status = 'sending'"
        ).fetchone()[0]
    finally:
        db.close()
    assert set(statuses) <= {"done", "pending"} and statuses["done"] >= 1
    assert statuses["done"] == 1 + len(stdout.splitlines())
    assert lease == 0 and unfinished == 0
    assert os.path.isdir(busy_workspace.outbox_dir)


def _first_line(process) -> str:
    """The first line of stdout, read byte by byte from the pipe.

    ``communicate()`` reads the pipe itself: lines a buffered ``readline()``
    had already pulled in would be missing from what it returns.
    """
    data = b""
    while not data.endswith(b"\n"):
        byte = os.read(process.stdout.fileno(), 1)
        if not byte:
            break
        data += byte
    return data.decode("utf-8")


def test_run_serve_takes_a_web_form_and_sends_without_waiting(workspace):
    import json
    import re
    import urllib.request

    from tests.support.fixtures import write_env

    only_sequences(
        workspace,
        hello="""
        trigger: lead.created
        steps:
          - send: email
            template: new-lead-email
        """,
    )
    write_env(workspace, {"CXM_EVENTS_TOKEN": "secret-token"})
    # The new contact has no zone of its own: the workspace's is where it is noon.
    workspace = update_settings(workspace, {"business.timezone": midday_zone()})
    process = subprocess.Popen(
        _cxm(workspace, "run", "--serve", "--port", "0", "--interval", "3600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for _ in range(20):
            line = process.stderr.readline()
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the web service did not start"
        request = urllib.request.Request(
            url + "/events",
            data=json.dumps(
                {
                    "type": "form.submitted",
                    "contact": {"email": "web@example.com", "first_name": "Web"},
                }
            ).encode(),
            headers={
                "Authorization": "Bearer secret-token",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        # The daemon's interval is an hour: only its event wake-up sends this.
        first = process.stdout.readline()
        assert first.startswith("sent\t")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
