"""STOP, in many spellings, arriving while a runner is sending texts.

Real parts: the runner in a thread with its own connection, `cxm serve` on
loopback receiving signed webhooks, and a loopback SMS provider. The promise
checked: no text is sent after the opt-out was recorded.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from cxm_cli import clock as clocks
from cxm_cli.inbound import create_minimal_contact
from cxm_cli.runner import run_once
from cxm_cli.server import serve_in_thread
from cxm_cli.store import write_transaction
from tests.support.fixtures import update_settings
from tests.test_server import post_signed

SPELLINGS = [
    "STOP",
    "stop",
    " Stop ",
    "STOP.",
    "stop!",
    "Unsubscribe",
    "cancel",
    "END",
    "quit",
    "StopAll",
    "REVOKE",
    "optout",
]
SMS_STEPS = 5

BURST = """name: burst
description: five texts in a row, no waits
trigger:
  event: lead.created
reenroll: never
steps:
""" + "".join(
    f"  - name: text-{n}\n    send: sms\n    template: nudge-text\n"
    for n in range(SMS_STEPS)
)


class TickingClock:
    """A fake clock every reader sees move forward, one millisecond per look.

    Threads share it, so the order of timestamps is the order things happened.
    """

    def __init__(self, start: str):
        self._now = clocks.parse(start)
        self._lock = threading.Lock()

    def now(self):
        with self._lock:
            self._now += timedelta(milliseconds=1)
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=max(0.0, seconds))


@pytest.fixture
def texting_workspace(workspace, sms_provider):
    for shipped in workspace.sequences_dir.iterdir():
        shipped.unlink()
    (workspace.sequences_dir / "burst.yaml").write_text(BURST, encoding="utf-8")
    configured = sms_provider.configure(workspace)
    return update_settings(
        configured,
        {
            "caps.sms_per_day": 0,
            "caps.sms_per_week": 0,
            "rate_limits.sms_per_second": 0,
        },
    )


def test_no_text_goes_out_after_stop(texting_workspace, sms_provider, db):
    ws = texting_workspace
    clock = TickingClock("2026-03-02T15:00:00Z")
    phones = [f"+1512555{2000 + n:04d}" for n in range(len(SPELLINGS))]
    with write_transaction(db):
        contacts = [
            create_minimal_contact(
                db, clock, phone=phone, first_name=f"P{n}", source="test"
            )
            for n, phone in enumerate(phones)
        ]
    pending = db.execute(
        "SELECT COUNT(*) FROM due_steps WHERE status = 'pending'"
    ).fetchone()[0]
    assert pending == len(contacts), "every contact should be enrolled in burst"

    stopping = threading.Event()
    runner_errors: list[BaseException] = []

    def runner() -> None:
        runner_db = ws.open_db()
        try:
            while not stopping.is_set():
                run_once(ws, runner_db, clock, concurrent=True)
        except BaseException as exc:  # reported by the test, not swallowed
            runner_errors.append(exc)
        finally:
            runner_db.close()

    server = serve_in_thread(ws, "127.0.0.1", 0, clock=clock)
    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not sms_provider.messages and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sms_provider.messages, "the runner sent nothing"

        for n, (phone, spelling) in enumerate(zip(phones, SPELLINGS, strict=True)):
            params = {
                "MessageSid": f"SMstop{n}",
                "From": phone,
                "To": sms_provider.from_number,
                "Body": spelling,
            }
            response = post_signed(
                server.url + "/twilio/sms", params, token=sms_provider.auth_token
            )
            assert response.status_code == 200
            time.sleep(0.02)

        # Let the runner finish whatever is still queued.
        deadline = time.monotonic() + 20
        while (
            time.monotonic() < deadline
            and db.execute(
                "SELECT COUNT(*) FROM due_steps WHERE status IN ('pending', 'claimed')"
            ).fetchone()[0]
        ):
            time.sleep(0.05)
    finally:
        stopping.set()
        thread.join(30)
        server.stop()
    assert not runner_errors, runner_errors

    sent_total = 0
    for contact_id in contacts:
        opted = db.execute(
            "SELECT at FROM events WHERE contact_id = ? AND type = 'opted_out'",
            [contact_id],
        ).fetchone()
        assert opted is not None, f"contact {contact_id} was not opted out"
        late = db.execute(
            "SELECT COUNT(*) FROM messages WHERE contact_id = ? AND channel = 'sms' "
            "AND direction = 'outbound' AND at > ?",
            [contact_id, opted[0]],
        ).fetchone()[0]
        assert late == 0, f"contact {contact_id} got a text after STOP"
        sent_total += db.execute(
            "SELECT COUNT(*) FROM messages WHERE contact_id = ? AND channel = 'sms' "
            "AND direction = 'outbound' AND status != 'failed'",
            [contact_id],
        ).fetchone()[0]

    # The provider saw exactly the texts cxm recorded as sent, no more.
    assert len(sms_provider.messages) == sent_total
    assert 0 < sent_total < len(contacts) * SMS_STEPS
