"""A known history for the audit tests, and a small builder to write it.

Events go in with ``run_hooks=False`` so other parts' rules (pipeline moves,
review requests) add nothing to the history whose numbers the tests work out
by hand. Messages are a ``messages`` row plus their event, as cxm records them.
"""

from __future__ import annotations

from cxm_cli import clock as clocks
from cxm_cli.events import record_event

SINCE = "2026-02-01T00:00:00Z"
UNTIL = "2026-03-01T00:00:00Z"


class HistoryBuilder:
    def __init__(self, db, clock):
        self.db = db
        self.clock = clock
        self.ids: dict[str, int] = {}

    def contact(
        self,
        key: str,
        *,
        source: str | None = None,
        email: str | None = None,
        created: str = "2026-01-01T00:00:00Z",
    ):
        contact_id = (
            self.db["contacts"]
            .insert(
                {
                    "display_name": key.title(),
                    "email": email or f"{key}@example.com",
                    "source": source,
                    "created_at": clocks.iso(clocks.parse(created)),
                    "updated_at": clocks.iso(clocks.parse(created)),
                }
            )
            .last_pk
        )
        self.db["contact_emails"].insert(
            {
                "contact_id": contact_id,
                "email": email or f"{key}@example.com",
                "is_primary": 1,
                "created_at": clocks.iso(clocks.parse(created)),
            }
        )
        self.ids[key] = contact_id
        return contact_id

    def event(self, key: str | None, type: str, at: str, **data):
        contact_id = self.ids[key] if key else None
        return record_event(
            self.db,
            contact_id,
            type,
            clock=self.clock,
            at=at,
            data=data,
            source="test",
            run_hooks=False,
        )

    def message(
        self,
        key: str,
        direction: str,
        at: str,
        *,
        channel: str = "sms",
        status: str | None = None,
        body: str = "Hello",
    ):
        status = status or ("received" if direction == "inbound" else "sent")
        contact_id = self.ids[key]
        message_id = (
            self.db["messages"]
            .insert(
                {
                    "contact_id": contact_id,
                    "channel": channel,
                    "direction": direction,
                    "body": body,
                    "status": status,
                    "at": clocks.iso(clocks.parse(at)),
                }
            )
            .last_pk
        )
        if status == "failed":
            return message_id
        if direction == "outbound":
            kind = "message.sent"
        else:
            kind = (
                "message.auto_reply" if status == "auto_reply" else "message.received"
            )
        event = self.event(key, kind, at, message_id=message_id, channel=channel)
        self.db["messages"].update(message_id, {"event_id": event.id})
        return message_id

    def stages(self, key: str, pipeline: str, *moves: tuple[str, str]):
        previous = None
        for at, stage in moves:
            self.event(
                key,
                "stage.changed",
                at,
                pipeline=pipeline,
                **{"from": previous},
                to=stage,
                by="test",
                reason="test",
            )
            previous = stage


def build_known_history(db, clock) -> dict[str, int]:
    """The history test_audit_measures works out by hand (period: February 2026).

    Sources: web (c1 c2 c6 c7), facebook (c3 c4 c8), referral (c5 c9).
    """
    h = HistoryBuilder(db, clock)
    d = "2026-02-"

    # c1: web form, answered in 3 min, booked, reminded, came, paid, reviewed.
    h.contact("c1")
    h.event("c1", "form.submitted", d + "02T10:00:00Z", form="contact", source="web")
    h.message("c1", "outbound", d + "02T10:03:00Z")
    h.message("c1", "inbound", d + "02T10:30:00Z")
    h.message("c1", "outbound", d + "02T10:35:00Z")
    h.event(
        "c1",
        "appointment.booked",
        d + "03T09:00:00Z",
        appointment_id="a1",
        starts_at=d + "10T09:00:00Z",
    )
    h.message("c1", "outbound", d + "09T09:00:00Z", body="Reminder")
    h.event("c1", "appointment.completed", d + "10T10:00:00Z", appointment_id="a1")
    h.event(
        "c1",
        "review.requested",
        d + "10T12:00:00Z",
        request_id="r1",
        channel="sms",
        platforms=["google"],
    )
    h.event("c1", "review.rated", d + "10T13:00:00Z", request_id="r1", rating=5)
    h.event("c1", "review.received", d + "11T09:00:00Z", platform="google", rating=5)
    h.event("c1", "invoice.paid", d + "12T10:00:00Z", amount=200)
    h.stages(
        "c1",
        "intake",
        (d + "02T10:00:00Z", "new"),
        (d + "02T10:03:00Z", "contacted"),
        (d + "03T09:00:00Z", "booked"),
        (d + "12T10:00:00Z", "won"),
    )

    # c2: web lead answered after 2 hours, once; only an out-of-office came back.
    h.contact("c2")
    h.event("c2", "lead.created", d + "05T09:00:00Z", source="web")
    h.message("c2", "outbound", d + "05T11:00:00Z", channel="email")
    h.message("c2", "inbound", d + "05T11:01:00Z", channel="email", status="auto_reply")
    h.stages(
        "c2", "intake", (d + "05T09:00:00Z", "new"), (d + "05T11:00:00Z", "contacted")
    )

    # c3: facebook lead whose export time (11:00Z) is before it was recorded;
    # three touches to a reply, then left waiting; a no-show with no reminder.
    h.contact("c3")
    h.event(
        "c3",
        "lead.created",
        d + "07T12:00:00Z",
        source="facebook",
        created_time="2026-02-07T05:00:00-06:00",
    )
    h.message("c3", "outbound", d + "07T11:04:00Z")
    h.message("c3", "outbound", d + "08T11:00:00Z")
    h.message("c3", "outbound", d + "09T11:00:00Z")
    h.message("c3", "inbound", d + "09T12:00:00Z")
    h.event(
        "c3", "appointment.booked", d + "10T09:00:00Z", starts_at=d + "14T15:00:00Z"
    )
    h.event("c3", "appointment.no_show", d + "14T16:00:00Z")
    h.stages(
        "c3",
        "intake",
        (d + "07T12:00:00Z", "new"),
        (d + "08T11:00:00Z", "contacted"),
        (d + "10T09:00:00Z", "booked"),
    )

    # c4: wrote in by text (source only on the contact); our reply failed.
    h.contact("c4", source="facebook")
    h.message("c4", "inbound", d + "15T20:00:00Z")
    h.message("c4", "outbound", d + "15T20:05:00Z", status="failed")

    # c5: a customer from 2024 who never came back.
    h.contact("c5", source="referral", created="2024-06-01T00:00:00Z")
    h.event("c5", "lead.created", "2024-06-01T12:00:00Z")
    h.event(
        "c5", "appointment.completed", "2024-06-10T15:00:00Z", appointment_id="old1"
    )
    h.event("c5", "invoice.paid", "2024-06-10T15:30:00Z", amount=150)
    h.stages("c5", "intake", ("2024-06-01T12:00:00Z", "new"))

    # c6: web form answered in 2 min, booked, reminded by email, came, paid twice
    # within a week (one visit), asked for a review, no answer.
    h.contact("c6")
    h.event("c6", "form.submitted", d + "20T09:00:00Z", form="contact", source="web")
    h.message("c6", "outbound", d + "20T09:02:00Z")
    h.message("c6", "inbound", d + "20T09:10:00Z")
    h.message("c6", "outbound", d + "20T09:12:00Z")
    h.event(
        "c6",
        "appointment.booked",
        d + "20T09:15:00Z",
        appointment_id="a6",
        starts_at=d + "22T10:00:00Z",
    )
    h.message("c6", "outbound", d + "21T10:00:00Z", channel="email")
    h.event("c6", "appointment.completed", d + "22T11:00:00Z", appointment_id="a6")
    h.event("c6", "invoice.paid", d + "22T11:00:00Z", amount=100)
    h.event(
        "c6",
        "review.requested",
        d + "22T12:00:00Z",
        request_id="r6",
        channel="email",
        platforms=["google"],
    )
    h.event("c6", "invoice.paid", d + "25T10:00:00Z", amount=50)
    h.stages(
        "c6",
        "intake",
        (d + "20T09:00:00Z", "new"),
        (d + "20T09:02:00Z", "contacted"),
        (d + "20T09:15:00Z", "booked"),
        (d + "22T11:00:00Z", "won"),
    )

    # c7: web form answered after 25 hours, once; booked then cancelled; lost.
    h.contact("c7")
    h.event("c7", "form.submitted", d + "25T08:00:00Z", form="contact", source="web")
    h.event(
        "c7",
        "appointment.booked",
        d + "25T08:30:00Z",
        appointment_id="c7",
        starts_at=d + "28T10:00:00Z",
    )
    h.message("c7", "outbound", d + "26T09:00:00Z", channel="email")
    h.event("c7", "appointment.cancelled", d + "27T08:00:00Z", appointment_id="c7")
    h.stages("c7", "intake", (d + "25T08:00:00Z", "new"), (d + "28T08:00:00Z", "lost"))

    # c8: facebook lead answered in a minute; replied STOP (opted out); has an
    # appointment booked for March.
    h.contact("c8")
    h.event("c8", "lead.created", d + "26T10:00:00Z", source="facebook")
    h.message("c8", "outbound", d + "26T10:01:00Z")
    h.message("c8", "inbound", d + "26T10:05:00Z", body="STOP")
    h.event("c8", "opted_out", d + "26T10:05:00Z", channel="sms")
    h.event(
        "c8", "appointment.booked", d + "27T10:00:00Z", starts_at="2026-03-05T10:00:00Z"
    )

    # c9: a returning referral customer: paid in November, came in February
    # (booked in January), was not reminded and not asked for a review.
    h.contact("c9", source="referral", created="2025-10-01T00:00:00Z")
    h.event("c9", "lead.created", "2025-10-01T12:00:00Z", source="referral")
    h.event("c9", "invoice.paid", "2025-11-10T16:00:00Z", amount=120)
    h.event(
        "c9",
        "appointment.booked",
        "2026-01-20T10:00:00Z",
        appointment_id="a9",
        starts_at=d + "18T13:00:00Z",
    )
    h.event("c9", "appointment.completed", d + "18T14:00:00Z", appointment_id="a9")
    h.event("c9", "invoice.paid", d + "18T14:00:00Z", amount=300)

    # Public reviews nobody could match to a contact: one in the period.
    h.event(None, "review.received", d + "20T12:00:00Z", platform="yelp", rating=3)
    h.event(
        None, "review.received", "2026-01-15T12:00:00Z", platform="google", rating=2
    )
    # After the period: must not count anywhere.
    h.message("c2", "inbound", "2026-03-02T09:00:00Z")
    return h.ids
