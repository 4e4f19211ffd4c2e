"""The audit's measures, each fed one contact history at a time.

Every measure has ``add(history)`` and ``result() -> dict``. Each result holds
``overall`` and the same numbers ``by_source`` and ``by_channel``, plus the
rows behind them (contact ids) that findings point at.

Definitions (the README's audit guide repeats them):

- A **lead** is a contact whose first inbound moment (``lead.created``,
  ``form.submitted`` or an inbound message; a lead's ``created_time`` when the
  export gave an earlier one) falls in the period. Its **source** is the first
  lead event's ``source``, else the contact's; its **channel** is how that
  first inbound came (sms, email, form, or "lead" for a bare lead record).
- A **reply** or **touch** is an outbound message that did not fail, human or
  automated; a **response** from the person is an inbound message or a booking.
- A **customer** has a completed appointment or a paid invoice; a **visit** is
  a day with either.
- A lead with no reply by the audit's end (``--until``, else now) was
  **never** answered and waited over an hour only when it came in over an hour
  before that end; a younger one is **not answered yet** and counts as neither.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cxm_cli.audit.history import ContactHistory, parse_rating
from cxm_cli.audit.options import AuditOptions
from cxm_cli.audit.stats import (
    Breakdown,
    epoch,
    mean,
    median,
    percentile,
    seconds_between,
    share,
    stored_from_epoch,
)

FIVE_MINUTES = 5 * 60
ONE_HOUR = 60 * 60
ONE_DAY = 24 * ONE_HOUR

SPEED_BUCKETS = (
    "within 5 min",
    "5 to 60 min",
    "1 to 24 hours",
    "over a day",
    "never",
    "not answered yet",
)
WAIT_BUCKETS = ("under 1 hour", "1 to 24 hours", "1 to 7 days", "over 7 days")


def _hours_before(stored: str, hours: float) -> str:
    return stored_from_epoch(epoch(stored) - hours * 3600)


# --- speed to lead -----------------------------------------------------------


class SpeedTally:
    """Leads by how fast they were answered.

    A lead nobody answered by the audit's end has "waited over an hour" (and
    counts as ``never``) only when it arrived over an hour before that end;
    a younger one is ``not_yet``: in neither group, since its hour is not up.
    """

    __slots__ = ("leads", "within_5", "within_60", "not_yet", "durations")

    def __init__(self):
        self.leads = self.within_5 = self.within_60 = self.not_yet = 0
        self.durations: list[float] = []

    def add(self, seconds: float | None, waited: float | None = None) -> None:
        """Count a lead answered after ``seconds``, or unanswered for ``waited``."""
        self.leads += 1
        if seconds is None:
            self.not_yet += _within_the_hour(waited)
            return
        self.durations.append(seconds)
        self.within_5 += seconds <= FIVE_MINUTES
        self.within_60 += seconds <= ONE_HOUR

    def result(self) -> dict[str, Any]:
        answered = len(self.durations)
        never = self.leads - answered - self.not_yet
        over_hour = self.leads - self.within_60 - self.not_yet
        return {
            "leads": self.leads,
            "answered": answered,
            "median_seconds": median(self.durations),
            "p90_seconds": percentile(self.durations, 90),
            "within_5_min": self.within_5,
            "within_5_min_share": share(self.within_5, self.leads),
            "within_1_hour": self.within_60,
            "within_1_hour_share": share(self.within_60, self.leads),
            "over_1_hour": over_hour,
            "over_1_hour_share": share(over_hour, self.leads),
            "never": never,
            "never_share": share(never, self.leads),
            "not_yet": self.not_yet,
            "not_yet_share": share(self.not_yet, self.leads),
        }


class SpeedToLead:
    """Time from a lead's first inbound moment to the first reply."""

    def __init__(self, options: AuditOptions):
        self.options = options
        self.groups = Breakdown(SpeedTally)
        self.buckets: Counter[str] = Counter()
        self.rows: list[dict[str, Any]] = []

    def add(self, history: ContactHistory) -> None:
        start = history.first_inbound_at
        if not self.options.in_period(start):
            return
        reply = next((at for at, _ in history.outbound if at >= start), None)
        seconds = seconds_between(start, reply) if reply else None
        # An unanswered lead has waited until the moment the audit looks from.
        waited = seconds_between(start, self.options.as_of) if reply is None else None
        for tally in self.groups.parts(history.source, history.channel):
            tally.add(seconds, waited)
        self.buckets[_speed_bucket(seconds, waited)] += 1
        self.rows.append(
            {
                "contact_id": history.contact_id,
                "source": history.source,
                "channel": history.channel,
                "inbound_at": start,
                "first_reply_at": reply,
                "seconds": seconds,
                "waiting_seconds": waited,
            }
        )

    def result(self) -> dict[str, Any]:
        return {
            **self.groups.result("leads"),
            "buckets": [{"label": b, "count": self.buckets[b]} for b in SPEED_BUCKETS],
            "leads": self.rows,
        }


def _within_the_hour(waited: float | None) -> bool:
    return waited is not None and waited <= ONE_HOUR


def _speed_bucket(seconds: float | None, waited: float | None = None) -> str:
    if seconds is None:
        return "not answered yet" if _within_the_hour(waited) else "never"
    if seconds <= FIVE_MINUTES:
        return "within 5 min"
    if seconds <= ONE_HOUR:
        return "5 to 60 min"
    if seconds <= ONE_DAY:
        return "1 to 24 hours"
    return "over a day"


# --- unanswered conversations --------------------------------------------------


class WaitTally:
    __slots__ = ("waits",)

    def __init__(self):
        self.waits: list[float] = []

    def add(self, seconds: float) -> None:
        self.waits.append(seconds)

    def result(self) -> dict[str, Any]:
        return {
            "conversations": len(self.waits),
            "median_wait_seconds": median(self.waits),
            "longest_wait_seconds": max(self.waits) if self.waits else None,
        }


class Unanswered:
    """Conversations whose last message is the person's, still waiting.

    The wait runs from their last message to the end of the period. People who
    opted out with (or after) that message are not waiting for anything. Here
    ``channel`` is the channel of that last message.
    """

    def __init__(self, options: AuditOptions):
        self.options = options
        self.groups = Breakdown(WaitTally)
        self.buckets: Counter[str] = Counter()
        self.rows: list[dict[str, Any]] = []

    def add(self, history: ContactHistory) -> None:
        if not history.inbound:
            return
        last_at, channel = history.inbound[-1]
        if history.outbound and history.outbound[-1][0] >= last_at:
            return
        # Limitation: a closing "thanks!" from the person leaves the conversation
        # counted as waiting, as nothing tells it from a question.
        if history.last_opt_out_at and history.last_opt_out_at >= last_at:
            return
        if not self.options.in_period(last_at):
            return
        wait = seconds_between(last_at, self.options.as_of)
        for tally in self.groups.parts(history.source, channel):
            tally.add(wait)
        self.buckets[_wait_bucket(wait)] += 1
        self.rows.append(
            {
                "contact_id": history.contact_id,
                "source": history.source,
                "channel": channel,
                "last_inbound_at": last_at,
                "wait_seconds": wait,
            }
        )

    def result(self) -> dict[str, Any]:
        self.rows.sort(key=lambda row: -row["wait_seconds"])
        return {
            **self.groups.result("conversations"),
            "buckets": [{"label": b, "count": self.buckets[b]} for b in WAIT_BUCKETS],
            "conversations": self.rows,
        }


def _wait_bucket(seconds: float) -> str:
    if seconds < ONE_HOUR:
        return "under 1 hour"
    if seconds < ONE_DAY:
        return "1 to 24 hours"
    if seconds < 7 * ONE_DAY:
        return "1 to 7 days"
    return "over 7 days"


# --- follow-up depth ------------------------------------------------------------


class FollowUpTally:
    __slots__ = ("leads", "contacted", "dropped_one", "touches_to_reply")

    def __init__(self):
        self.leads = self.contacted = self.dropped_one = 0
        self.touches_to_reply: list[int] = []

    def add(self, touches: int, replied: bool) -> None:
        self.leads += 1
        if touches == 0:
            return
        self.contacted += 1
        if replied:
            self.touches_to_reply.append(touches)
        elif touches == 1:
            self.dropped_one += 1

    def result(self) -> dict[str, Any]:
        replied = len(self.touches_to_reply)
        return {
            "leads": self.leads,
            "contacted": self.contacted,
            "never_touched": self.leads - self.contacted,
            "replied": replied,
            "reply_share": share(replied, self.contacted),
            "median_touches_to_reply": median(self.touches_to_reply),
            "mean_touches_to_reply": mean(self.touches_to_reply),
            "dropped_after_one_touch": self.dropped_one,
            "dropped_after_one_touch_share": share(self.dropped_one, self.contacted),
        }


class FollowUpDepth:
    """How many touches a lead gets before responding, and who is dropped.

    Touches are outbound messages from the lead's first inbound moment on; the
    response is their first inbound message or booking after the first touch.
    "Dropped after one touch" is a contacted lead who got exactly one message
    and never responded; its share is of contacted leads.
    """

    def __init__(self, options: AuditOptions):
        self.options = options
        self.groups = Breakdown(FollowUpTally)
        self.replied_at_touch: Counter[str] = Counter()
        self.silent_after: Counter[str] = Counter()
        self.dropped: list[int] = []

    def add(self, history: ContactHistory) -> None:
        start = history.first_inbound_at
        if not self.options.in_period(start):
            return
        touches, response = history.lead_follow_up()
        count = sum(1 for at in touches if at < response) if response else len(touches)

        for tally in self.groups.parts(history.source, history.channel):
            tally.add(count, response is not None)
        if response is not None:
            self.replied_at_touch[_count_label(count)] += 1
        elif touches:
            self.silent_after[_count_label(count)] += 1
            if count == 1:
                self.dropped.append(history.contact_id)

    def result(self) -> dict[str, Any]:
        labels = ("1", "2", "3", "4+")
        return {
            **self.groups.result("leads"),
            "replied_at_touch": [
                {"touches": k, "leads": self.replied_at_touch[k]} for k in labels
            ],
            "silent_after_touches": [
                {"touches": k, "leads": self.silent_after[k]} for k in labels
            ],
            "dropped_after_one_touch": self.dropped,
        }


def _count_label(count: int) -> str:
    return "4+" if count >= 4 else str(count)


# --- appointments ----------------------------------------------------------------


class AppointmentTally:
    __slots__ = ("booked", "completed", "no_show", "cancelled", "reminded")

    def __init__(self):
        self.booked = self.completed = self.no_show = 0
        self.cancelled = self.reminded = 0

    def result(self) -> dict[str, Any]:
        due = self.completed + self.no_show
        return {
            "booked": self.booked,
            "completed": self.completed,
            "no_show": self.no_show,
            "cancelled": self.cancelled,
            "no_show_rate": share(self.no_show, due),
            "due": due,
            "reminded": self.reminded,
            "reminder_coverage": share(self.reminded, due),
        }


class Appointments:
    """Booked, completed, no-show and cancelled, and reminder coverage.

    Booked counts bookings made in the period; outcomes count those noted in
    the period. The no-show rate and reminder coverage are over appointments
    that fell due (completed or no-show). An appointment counts as reminded
    when an outbound message went out in the ``reminder_hours`` before its
    start and not before it was booked.
    """

    def __init__(self, options: AuditOptions):
        self.options = options
        self.groups = Breakdown(AppointmentTally)
        self.reminder_channels: Counter[str] = Counter()
        self.no_shows: list[dict[str, Any]] = []
        self.not_reminded: list[dict[str, Any]] = []

    def add(self, history: ContactHistory) -> None:
        parts = None
        for appointment in history.appointments:
            booked = self.options.in_period(appointment.booked_at)
            due = appointment.outcome and self.options.in_period(appointment.outcome_at)
            if not booked and not due:
                continue
            parts = parts or self.groups.parts(history.source, history.channel)
            for tally in parts:
                tally.booked += booked
            if not due:
                continue

            outcome = appointment.outcome
            for tally in parts:
                setattr(tally, outcome, getattr(tally, outcome) + 1)
            if outcome == "cancelled":
                continue
            reminder = self._reminder(history, appointment)
            row = {
                "contact_id": history.contact_id,
                "appointment": appointment.key,
                "start": appointment.start,
                "outcome": outcome,
                "reminded": reminder is not None,
            }
            if reminder is not None:
                self.reminder_channels[reminder] += 1
                for tally in parts:
                    tally.reminded += 1
            else:
                self.not_reminded.append(row)
            if outcome == "no_show":
                self.no_shows.append(row)

    def _reminder(self, history: ContactHistory, appointment) -> str | None:
        """The channel of the last reminder before the start, or None."""
        # Limitation: any outbound message in the window counts, whatever it
        # said; a chat about something else looks like a reminder.
        start = appointment.start
        lower = _hours_before(start, self.options.reminder_hours)
        if appointment.booked_at and appointment.booked_at < start:
            lower = max(lower, appointment.booked_at)
        found = None
        for at, channel in history.outbound:
            if at >= start:
                break
            if at >= lower:
                found = channel
        return found

    def result(self) -> dict[str, Any]:
        return {
            **self.groups.result("booked"),
            "reminder_channels": dict(self.reminder_channels.most_common()),
            "no_shows": self.no_shows,
            "not_reminded": self.not_reminded,
        }


# --- reviews ------------------------------------------------------------------------


class ReviewTally:
    __slots__ = ("requests", "answered", "completed_jobs", "paid_jobs", "jobs_source")

    def __init__(self):
        self.requests = self.answered = self.completed_jobs = self.paid_jobs = 0
        self.jobs_source = "appointments"

    def result(self) -> dict[str, Any]:
        jobs = self.paid_jobs if self.jobs_source == "payments" else self.completed_jobs
        return {
            "requests": self.requests,
            "answered": self.answered,
            "answer_rate": share(self.answered, self.requests),
            "completed_jobs": jobs,
            "requests_per_job": None if not jobs else round(self.requests / jobs, 2),
        }


class Reviews:
    """Review requests per completed job, answers, and ratings over time.

    A request is answered by a rating, private feedback or a public review
    carrying its request id, or, without an id, by the contact's next answer
    before another request. Here ``channel`` is the channel the request went
    out on. Public reviews come from ``review.received`` events, including
    those not matched to any contact; see :func:`public_reviews`.
    """

    def __init__(self, options: AuditOptions):
        self.options = options
        self.groups = Breakdown(ReviewTally)
        self.saw_appointments = False
        self.ratings_by_month: dict[str, list[float]] = {}
        self.public_after_request = 0
        self.jobs_not_asked: list[dict[str, Any]] = []
        self.paid_not_asked: list[dict[str, Any]] = []

    def add(self, history: ContactHistory) -> None:
        in_period = self.options.in_period
        self.saw_appointments = self.saw_appointments or bool(history.appointments)
        if history.appointments or history.payments:
            self._jobs(history)
        requests = history.review_requests
        if not requests and not history.review_answers:
            return
        answered = _answered_requests(requests, history.review_answers)

        for index, (at, _, channel) in enumerate(requests):
            if not in_period(at):
                continue
            for tally in (
                self.groups.overall,
                self.groups.for_source(history.source),
                self.groups.for_channel(channel),
            ):
                tally.requests += 1
                tally.answered += index in answered

        for at, _, kind, rating in history.review_answers:
            if not in_period(at):
                continue
            if kind == "review.received":
                if requests and requests[0][0] <= at:
                    self.public_after_request += 1
            elif rating is not None:
                month = self.options.local_month(at)
                self.ratings_by_month.setdefault(month, []).append(rating)

    def _jobs(self, history: ContactHistory) -> None:
        jobs = [
            a.outcome_at
            for a in history.appointments
            if a.outcome == "completed" and self.options.in_period(a.outcome_at)
        ]
        paid = [
            at
            for at, amount in history.payments
            if amount > 0 and self.options.in_period(at)
        ]
        overall, by_source = self.groups.overall, self.groups.for_source(history.source)
        for tally in (overall, by_source):
            tally.completed_jobs += len(jobs)
            tally.paid_jobs += len(paid)

        request_times = [at for at, _, _ in history.review_requests]
        for kind, times, rows in (
            ("job", jobs, self.jobs_not_asked),
            ("payment", paid, self.paid_not_asked),
        ):
            for at in times:
                if not any(asked >= at for asked in request_times):
                    rows.append({"contact_id": history.contact_id, kind: at})

    def result(self, public: dict[str, Any]) -> dict[str, Any]:
        # With no appointment data at all, paid invoices stand in for jobs.
        jobs_source = "appointments" if self.saw_appointments else "payments"
        groups = self.groups
        for tally in (
            groups.overall,
            *groups.by_source.values(),
            *groups.by_channel.values(),
        ):
            tally.jobs_source = jobs_source
        result = self.groups.result("requests")
        months = sorted(set(self.ratings_by_month) | set(public["by_month"]))
        result["overall"].update(
            {
                "jobs_from": jobs_source,
                "public_reviews": public["count"],
                "public_average_rating": public["average"],
                "public_reviews_after_request": self.public_after_request,
            }
        )
        result["by_month"] = [
            {
                "month": month,
                "ratings": len(self.ratings_by_month.get(month, [])),
                "average_rating": mean(self.ratings_by_month.get(month, [])),
                "public_reviews": len(public["by_month"].get(month, [])),
                "public_average_rating": mean(public["by_month"].get(month, [])),
            }
            for month in months
        ]
        result["by_platform"] = public["by_platform"]
        result["jobs_not_asked"] = (
            self.paid_not_asked if not self.saw_appointments else self.jobs_not_asked
        )
        return result


def _answered_requests(requests, answers) -> set[int]:
    """Indexes of requests that got an answer (by request id, else by order)."""
    answered: set[int] = set()
    by_id = {str(rid): i for i, (_, rid, _) in enumerate(requests) if rid is not None}
    for at, request_id, _, _ in answers:
        if request_id is not None and str(request_id) in by_id:
            answered.add(by_id[str(request_id)])
            continue
        earlier = [i for i, (asked, _, _) in enumerate(requests) if asked <= at]
        if earlier:
            answered.add(earlier[-1])
    return answered


def public_reviews(db, options: AuditOptions) -> dict[str, Any]:
    """Public reviews gained in the period, matched to a contact or not.

    The reviews part keeps every imported review in ``reviews`` (matched ones
    also become a ``review.received`` event carrying its ``review_id``); any
    other ``review.received`` event counts on its own.
    """
    rows = db.conn.execute(
        """
        SELECT at, json_extract(data, '$.platform'), json_extract(data, '$.rating')
        FROM events
        WHERE type = 'review.received' AND at < ?
          AND json_extract(data, '$.review_id') IS NULL
        """,
        [options.as_of],
    ).fetchall()
    if db["reviews"].exists():
        rows += db.conn.execute(
            "SELECT reviewed_at, platform, rating FROM reviews WHERE reviewed_at < ?",
            [options.as_of],
        ).fetchall()

    by_month: dict[str, list[float]] = {}
    by_platform: dict[str, list[float | None]] = {}
    ratings: list[float] = []
    count = 0
    for at, platform, raw in rows:
        if not options.in_period(at):
            continue
        count += 1
        rating = parse_rating(raw)
        by_platform.setdefault(str(platform or "unknown"), []).append(rating)
        if rating is not None:
            ratings.append(rating)
            by_month.setdefault(options.local_month(at), []).append(rating)
    return {
        "count": count,
        "average": mean(ratings),
        "by_month": by_month,
        "by_platform": [
            {
                "platform": name,
                "reviews": len(values),
                "average_rating": mean([v for v in values if v is not None]),
            }
            for name, values in sorted(by_platform.items(), key=lambda i: -len(i[1]))
        ],
    }


# --- attribution --------------------------------------------------------------------


class AttributionTally:
    __slots__ = ("leads", "converted", "booked", "revenue", "customers", "lifetime")

    def __init__(self):
        self.leads = self.converted = self.booked = self.customers = 0
        self.revenue = self.lifetime = 0.0

    def result(self) -> dict[str, Any]:
        return {
            "leads": self.leads,
            "booked": self.booked,
            "converted": self.converted,
            "conversion": share(self.converted, self.leads),
            "revenue": round(self.revenue, 2),
            "customers": self.customers,
            "lifetime_value": (
                round(self.lifetime / self.customers, 2) if self.customers else None
            ),
        }


class Attribution:
    """Leads, bookings, conversion and money per source and channel.

    ``leads``, ``booked`` and ``converted`` follow the leads of the period
    (booked or became a customer by the end of it). ``revenue`` is every net
    payment in the period, from anyone of that source; ``lifetime_value`` is the
    average net total, to the end of the period, of that source's paying
    customers.
    """

    def __init__(self, options: AuditOptions):
        self.options = options
        self.groups = Breakdown(AttributionTally)

    def add(self, history: ContactHistory) -> None:
        is_lead = self.options.in_period(history.first_inbound_at)
        if not is_lead and not history.payments:
            return
        lifetime = sum(amount for _, amount in history.payments)
        revenue = sum(
            amount for at, amount in history.payments if self.options.in_period(at)
        )
        converted = is_lead and history.became_customer()
        booked = is_lead and bool(history.bookings)
        for tally in self.groups.parts(history.source, history.channel):
            tally.leads += is_lead
            tally.converted += converted
            tally.booked += booked
            tally.revenue += revenue
            if lifetime > 0:
                tally.customers += 1
                tally.lifetime += lifetime

    def result(self) -> dict[str, Any]:
        return self.groups.result("leads")


# --- retention ------------------------------------------------------------------------


class RetentionTally:
    __slots__ = ("customers", "repeat", "new", "active", "lapsed")

    def __init__(self):
        self.customers = self.repeat = self.new = self.active = self.lapsed = 0

    def result(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "repeat_customers": self.repeat,
            "repeat_share": share(self.repeat, self.customers),
            "new_customers": self.new,
            "active_customers": self.active,
            "lapsed_customers": self.lapsed,
            "lapsed_share": share(self.lapsed, self.customers),
        }


class Retention:
    """Repeat and lapsed customers, counted in visits (days served or paying).

    Everyone who was a customer by the end of the period counts; "new" had
    their first visit in the period, "active" had any visit in it, "repeat"
    has visits on at least two days, and "lapsed" has had none in the last
    ``lapsed_days`` before the end of the period.
    """

    def __init__(self, options: AuditOptions):
        self.options = options
        self.groups = Breakdown(RetentionTally)
        self.lapsed_before = _hours_before(options.as_of, options.lapsed_days * 24)
        self.visit_counts: Counter[str] = Counter()
        self.lapsed: list[dict[str, Any]] = []

    def add(self, history: ContactHistory) -> None:
        visits = history.visits
        if not visits:
            return
        days = {self.options.local_day(at) for at in visits}
        first, last = visits[0], visits[-1]
        lapsed = last < self.lapsed_before
        for tally in self.groups.parts(history.source, history.channel):
            tally.customers += 1
            tally.repeat += len(days) >= 2
            tally.new += self.options.in_period(first)
            tally.active += any(self.options.in_period(at) for at in visits)
            tally.lapsed += lapsed
        self.visit_counts[_count_label(len(days))] += 1
        if lapsed:
            self.lapsed.append(
                {
                    "contact_id": history.contact_id,
                    "last_visit_at": last,
                    "days_since": int(
                        seconds_between(last, self.options.as_of) // ONE_DAY
                    ),
                    "visits": len(days),
                }
            )

    def result(self) -> dict[str, Any]:
        self.lapsed.sort(key=lambda row: row["last_visit_at"])
        return {
            **self.groups.result("customers"),
            "visits": [
                {"visits": k, "customers": self.visit_counts[k]}
                for k in ("1", "2", "3", "4+")
            ],
            "lapsed": self.lapsed,
        }
