"""Matching a lead to the contacts already in the workspace, and merging it in.

The rules (EXPECTED.md in the shared corpus, and the README's importing guide):

- the same normalised email is the same person;
- the same phone is the same person only when one side has no email or the
  emails overlap; a shared phone with different emails gives two contacts
  flagged as likely duplicates (households, front desks);
- a merged contact keeps every distinct email and phone, first-seen primary;
- a name is never replaced by an upper-case, accent-stripped or mojibake copy
  of itself, and a better-written copy of the same name improves it.

Matching asks SQLite, inside the import's transaction, so rows created earlier
in the same file are found too and memory stays flat on large files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cxm_cli import clock as clocks
from cxm_cli.contacts import (
    PHONE_OPT_OUT_SOURCES,
    add_tag,
    consent_status,
    identifier_hash,
    inherit_phone_opt_out,
    phone_opted_out,
    set_consent,
)
from cxm_cli.events import NewEvent, record_event, record_events
from cxm_cli.importing.records import Lead
from cxm_cli.importing.values import (
    display_name,
    fold_name,
    is_variant_of,
    name_quality,
)
from cxm_cli.store import dumps, loads

log = logging.getLogger(__name__)

ON_CONFLICT = ("fill", "overwrite", "skip")
# A front-desk number can be shared by thousands of contacts; matching and
# flagging look at the oldest few, which keeps each row's work bounded.
# Limitation: a phone shared by more contacts than this is only compared with
# the oldest of them, so a phone-only row may miss its best name match.
PHONE_MATCH_LIMIT = 20
_NAME_FIELDS = ("first_name", "last_name")
# New leads whose lead.created waits to be recorded with others: enough to
# make the hooks' shared reads and writes pay, few enough to stay small.
PENDING_LIMIT = 1000


@dataclass
class MergeResult:
    outcome: str  # created | updated | unchanged | rejected
    contact_id: int | None
    merged: bool = False  # the row joined a contact made by an earlier row
    reason: str | None = None


class ContactMerger:
    """Applies leads of one batch; holds the batch's write-side state."""

    def __init__(
        self,
        db,
        clock,
        *,
        batch_id: int,
        file_label: str,
        default_source: str,
        on_conflict: str = "fill",
        run_hooks: bool = True,
        existing: bool = False,
    ):
        self.db = db
        self.conn = db.conn
        self.clock = clock
        self.batch_id = batch_id
        self.file_label = file_label
        self.default_source = default_source
        self.on_conflict = on_conflict
        self.run_hooks = run_hooks
        # The file lists existing customers or contacts (--existing-contacts).
        self.existing = existing
        self.now = clocks.now_iso(clock)
        self.event_source = "import"
        self.consent_source = f"import:{file_label}"
        row = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM contacts").fetchone()
        # Contacts with a higher id were created by this batch (one writer).
        self.first_new_id = row[0] + 1
        self.check_suppressions = (
            self.conn.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone()
            is not None
        )
        marks = ",".join("?" * len(PHONE_OPT_OUT_SOURCES))
        # A number that texted STOP stays opted out for whoever is given it;
        # asked once here so a workspace without any costs nothing per row.
        self.check_phone_opt_outs = (
            self.conn.execute(
                "SELECT 1 FROM consents WHERE channel = 'sms' AND status = "
                f"'opted_out' AND source IN ({marks}) LIMIT 1",
                PHONE_OPT_OUT_SOURCES,
            ).fetchone()
            is not None
        )
        # lead.created of plain new leads, recorded together by flush().
        self.pending: list[NewEvent] = []
        self.pending_ids: set[int] = set()

    def flush(self) -> None:
        """Record the waiting lead.created events (and run their hooks).

        Called before anything else touches those contacts (a merge into one
        of them; a lead with events or consent of its own, whose hooks may
        reach beyond its contact) and at the end, so every contact still sees
        its events in the order one by one would.
        """
        pending, self.pending = self.pending, []
        self.pending_ids.clear()
        record_events(self.db, pending, clock=self.clock, run_hooks=self.run_hooks)

    # ------------------------------------------------------------ entry point

    def apply(self, lead: Lead) -> MergeResult:
        if self.check_suppressions and self._suppressed(lead):
            return MergeResult("rejected", None, reason="suppressed")

        email_owners = self._email_owners(lead.emails)
        target, others, shared = self._choose(lead, email_owners)
        if target is None:
            contact_id = self._create(lead)
            for other in shared:
                self._flag(contact_id, other, "shared phone, different emails")
            return MergeResult("created", contact_id)

        if target in self.pending_ids:
            # Its lead.created (and what that starts) comes before the merge.
            self.flush()
        result = self._update(target, lead, email_owners)
        for other in others:
            self._flag(target, other, "same email or phone in one record")
        for other in shared:
            self._flag(target, other, "shared phone, different emails")
        return result

    # ------------------------------------------------------------ matching

    def _suppressed(self, lead: Lead) -> bool:
        values = lead.emails + [p.e164 for p in lead.phones]
        hashes = [identifier_hash(v) for v in values]
        marks = ",".join("?" * len(hashes))
        sql = f"SELECT 1 FROM suppressions WHERE identifier_hash IN ({marks}) LIMIT 1"
        return self.conn.execute(sql, hashes).fetchone() is not None

    def _email_owners(self, emails: list[str]) -> dict[str, int]:
        if not emails:
            return {}
        marks = ",".join("?" * len(emails))
        sql = f"SELECT email, contact_id FROM contact_emails WHERE email IN ({marks})"
        return dict(self.conn.execute(sql, emails).fetchall())

    def _phone_owners(self, phones: list[str]) -> list[int]:
        if not phones:
            return []
        marks = ",".join("?" * len(phones))
        sql = (
            f"SELECT DISTINCT contact_id FROM contact_phones WHERE phone IN ({marks}) "
            f"ORDER BY contact_id LIMIT {PHONE_MATCH_LIMIT}"
        )
        return [row[0] for row in self.conn.execute(sql, phones)]

    def _keep_number_blocked(self, contact_id: int, lead: Lead) -> bool:
        """cxm's export says a phone of this contact had opted out of texts
        under another holder there: unless a holder here blocks it already,
        the contact is opted out of texts, so the number stays blocked."""
        if (
            not lead.number_opted_out
            or consent_status(self.db, contact_id, "sms") == "opted_out"
        ):
            return False
        blocked_here = self.conn.execute(
            "SELECT 1 FROM contact_phones mine JOIN contact_phones theirs"
            " ON theirs.phone = mine.phone AND theirs.contact_id != mine.contact_id"
            " JOIN consents c ON c.contact_id = theirs.contact_id"
            " AND c.channel = 'sms' AND c.status = 'opted_out'"
            " WHERE mine.contact_id = ? LIMIT 1",
            [contact_id],
        ).fetchone()
        if blocked_here:
            return False
        return set_consent(
            self.db,
            contact_id,
            "sms",
            "opted_out",
            clock=self.clock,
            source="shared_phone",
            detail={
                "batch_id": self.batch_id,
                "reason": "this number had opted out of texts where it was exported",
            },
        )

    def _opted_out_phones(self, phones: list[str]) -> list[str]:
        if not self.check_phone_opt_outs:
            return []
        return [phone for phone in phones if phone_opted_out(self.db, phone)]

    def _has_email(self, contact_id: int) -> bool:
        sql = "SELECT 1 FROM contact_emails WHERE contact_id = ? LIMIT 1"
        return self.conn.execute(sql, [contact_id]).fetchone() is not None

    def _choose(self, lead: Lead, email_owners: dict[str, int]):
        """(target contact or None, other matches to flag, shared-phone contacts)."""
        by_email: list[int] = []
        for email in lead.emails:
            owner = email_owners.get(email)
            if owner is not None and owner not in by_email:
                by_email.append(owner)

        by_phone: list[int] = []
        shared: list[int] = []
        for contact_id in self._phone_owners([p.e164 for p in lead.phones]):
            if contact_id in by_email:
                continue
            if not lead.emails or not self._has_email(contact_id):
                by_phone.append(contact_id)
            else:
                shared.append(contact_id)

        if by_email:
            return by_email[0], by_email[1:] + by_phone, shared
        if len(by_phone) > 1:
            by_phone.sort(key=lambda cid: not self._same_name(cid, lead))
        if by_phone:
            return by_phone[0], by_phone[1:], shared
        return None, [], shared

    def _same_name(self, contact_id: int, lead: Lead) -> bool:
        row = self.conn.execute(
            "SELECT first_name, last_name FROM contacts WHERE id = ?", [contact_id]
        ).fetchone()
        if row is None:
            return False
        return fold_name(_person(row[0], row[1])) == fold_name(
            _person(lead.first_name, lead.last_name)
        )

    def _flag(self, a: int, b: int, reason: str) -> None:
        if a == b:
            return
        low, high = sorted((a, b))
        self.conn.execute(
            "INSERT OR IGNORE INTO likely_duplicates "
            "(contact_a, contact_b, reason, batch_id, status, created_at) "
            "VALUES (?, ?, ?, ?, 'open', ?)",
            [low, high, reason, self.batch_id, self.now],
        )

    # ------------------------------------------------------------ creating

    def _create(self, lead: Lead) -> int:
        conn, now = self.conn, self.now
        messageable = [p for p in lead.phones if p.kind != "fax"]
        primary_phone = messageable[0].e164 if messageable else None
        source = lead.source or self.default_source
        cursor = conn.execute(
            "INSERT INTO contacts (display_name, first_name, last_name, company, email,"
            " phone, source, timezone, region, custom, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                display_name(lead.first_name, lead.last_name, lead.company),
                lead.first_name or None,
                lead.last_name or None,
                lead.company or None,
                lead.emails[0] if lead.emails else None,
                primary_phone,
                source,
                lead.timezone,
                lead.region,
                dumps(lead.custom),
                now,
                now,
            ],
        )
        contact_id = cursor.lastrowid
        status = "bouncing" if lead.bouncing else "ok"
        if lead.emails:
            conn.executemany(
                "INSERT INTO contact_emails (contact_id, email, is_primary, status,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                [
                    (contact_id, e, int(i == 0), status, now)
                    for i, e in enumerate(lead.emails)
                ],
            )
        if lead.phones:
            conn.executemany(
                "INSERT INTO contact_phones (contact_id, phone, extension, kind,"
                " is_primary, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        contact_id,
                        p.e164,
                        p.extension,
                        p.kind,
                        int(p.e164 == primary_phone),
                        now,
                    )
                    for p in lead.phones
                ],
            )
        if lead.tags:
            conn.executemany(
                "INSERT OR IGNORE INTO contact_tags (contact_id, tag, created_at)"
                " VALUES (?, ?, ?)",
                [(contact_id, tag, now) for tag in lead.tags],
            )

        stopped_phones = self._opted_out_phones([p.e164 for p in lead.phones])
        plain = not (
            lead.consent
            or lead.suppression
            or lead.events
            or stopped_phones
            or lead.number_opted_out
        )
        if not plain:
            self.flush()
        # Consent before lead.created, so a sequence the lead triggers already
        # sees an opt-out carried over from the source.
        for channel, (status_value, at) in lead.consent.items():
            set_consent(
                self.db,
                contact_id,
                channel,
                status_value,
                clock=self.clock,
                source=self.consent_source,
                at=at,
                detail={"batch_id": self.batch_id},
            )
        for phone in stopped_phones:
            inherit_phone_opt_out(self.db, contact_id, phone, clock=self.clock)
        self._keep_number_blocked(contact_id, lead)
        if lead.suppression:
            # An unsubscribe or bounce list is no list of new leads: a different
            # event, so no lead sequence, pipeline stage or lead count fires.
            event_type = "contact.imported"
            data = {"suppressed": True, "source": source, "batch_id": self.batch_id}
        elif self.existing or lead.existing:
            # Nor is a list of existing customers, vendors or friends, nor
            # cxm's own export of a workspace's contacts.
            # Limitation: the events of event-style exports (form.submitted,
            # appointment.booked) are still recorded for them, so sequences
            # and stages those trigger still start (the summary counts them).
            event_type = "contact.imported"
            data = {
                "existing": True,
                "source": source,
                "batch_id": self.batch_id,
                "created_time": lead.created_at,
            }
        else:
            event_type = "lead.created"
            data = {
                "source": source,
                "batch_id": self.batch_id,
                "created_time": lead.created_at,
            }
        data["file"] = self.file_label
        if plain:
            self.pending.append(
                NewEvent(contact_id, event_type, data, source=self.event_source)
            )
            self.pending_ids.add(contact_id)
            if len(self.pending) >= PENDING_LIMIT:
                self.flush()
        else:
            record_event(
                self.db,
                contact_id,
                event_type,
                clock=self.clock,
                data=data,
                source=self.event_source,
                run_hooks=self.run_hooks,
            )
        self._record_lead_events(contact_id, lead)
        conn.execute(
            "INSERT INTO import_changes (batch_id, contact_id, row_number, action)"
            " VALUES (?, ?, ?, 'created')",
            [self.batch_id, contact_id, lead.row],
        )
        return contact_id

    def _record_lead_events(self, contact_id: int, lead: Lead) -> bool:
        """Events of event-style exports, once per record however often imported."""
        if not lead.events:
            return False
        if lead.record_key:
            seen = self.conn.execute(
                "SELECT 1 FROM import_records WHERE record_key = ?", [lead.record_key]
            ).fetchone()
            if seen:
                return False
        event_id = None
        for event_type, at, data in lead.events:
            event = record_event(
                self.db,
                contact_id,
                event_type,
                clock=self.clock,
                data={**data, "batch_id": self.batch_id},
                at=at,
                source=self.event_source,
                run_hooks=self.run_hooks,
            )
            event_id = event_id or event.id
        if lead.record_key:
            self.conn.execute(
                "INSERT INTO import_records"
                " (record_key, contact_id, batch_id, event_id)"
                " VALUES (?, ?, ?, ?)",
                [lead.record_key, contact_id, self.batch_id, event_id],
            )
        return True

    # ------------------------------------------------------------ merging

    def _update(self, contact_id: int, lead: Lead, email_owners: dict[str, int]):
        conn = self.conn
        made_here = contact_id >= self.first_new_id
        row = conn.execute(
            "SELECT * FROM contacts WHERE id = ?", [contact_id]
        ).fetchone()
        columns = [
            d[0] for d in conn.execute("SELECT * FROM contacts LIMIT 0").description
        ]
        contact = dict(zip(columns, row, strict=True))
        skip = self.on_conflict == "skip"

        changes: dict[str, object] = {} if skip else self._field_changes(contact, lead)
        added: dict[str, list] = {"emails": [], "phones": [], "tags": []}
        if not skip:
            self._add_identifiers(
                contact, contact_id, lead, email_owners, changes, added
            )
            self._add_tags(contact_id, lead, made_here, added)
        changed_consent = self._merge_consent(contact_id, lead)
        for phone in self._opted_out_phones(added["phones"]):
            changed_consent |= inherit_phone_opt_out(
                self.db, contact_id, phone, clock=self.clock
            )
        changed_consent |= self._keep_number_blocked(contact_id, lead)
        changed_bounce = self._mark_bouncing(contact_id, lead) if not skip else False
        changed_events = False if skip else self._record_lead_events(contact_id, lead)

        if changes:
            names = {**contact, **changes}
            changes["display_name"] = display_name(
                names["first_name"] or "",
                names["last_name"] or "",
                names["company"] or "",
            )
            if changes["display_name"] == contact["display_name"]:
                del changes["display_name"]
        if changes:
            assignments = ", ".join(f"{name} = ?" for name in changes)
            values = [
                dumps(v) if name == "custom" else v for name, v in changes.items()
            ]
            conn.execute(
                f"UPDATE contacts SET {assignments}, updated_at = ? WHERE id = ?",
                [*values, self.now, contact_id],
            )

        touched = bool(
            changes or any(added.values()) or changed_consent or changed_bounce
        )
        changed = touched or changed_events
        if changed or made_here:
            self._record_merge(contact_id, lead, contact, changes, added, made_here)
        if touched and not made_here:
            before = {name: contact[name] for name in changes}
            conn.execute(
                "INSERT INTO import_changes (batch_id, contact_id, row_number, action,"
                " before, after, added) VALUES (?, ?, ?, 'updated', ?, ?, ?)",
                [
                    self.batch_id,
                    contact_id,
                    lead.row,
                    dumps(before),
                    dumps({k: v for k, v in changes.items()}),
                    dumps(added),
                ],
            )
        return MergeResult("updated" if changed else "unchanged", contact_id, made_here)

    def _field_changes(self, contact: dict, lead: Lead) -> dict[str, object]:
        overwrite = self.on_conflict == "overwrite"
        changes: dict[str, object] = {}

        old_person = _person(contact["first_name"], contact["last_name"])
        new_person = _person(lead.first_name, lead.last_name)
        take_new = False
        if new_person and not old_person:
            take_new = True
        elif new_person and is_variant_of(old_person, new_person):
            take_new = name_quality(new_person) > name_quality(old_person)
        elif new_person and overwrite:
            take_new = True
        elif new_person:
            # Fill a missing half of the name when the other half agrees.
            for name, other in (
                ("first_name", "last_name"),
                ("last_name", "first_name"),
            ):
                new_other = getattr(lead, other)
                agrees = not new_other or fold_name(new_other) == fold_name(
                    contact[other]
                )
                if not contact[name] and getattr(lead, name) and agrees:
                    changes[name] = getattr(lead, name)
        if take_new:
            for name in _NAME_FIELDS:
                new_value = getattr(lead, name) or None
                if new_value != contact[name]:
                    changes[name] = new_value

        if lead.company and lead.company != contact["company"]:
            old = contact["company"]
            if not old or (
                is_variant_of(old, lead.company) and _better(lead.company, old)
            ):
                changes["company"] = lead.company
            elif overwrite and not is_variant_of(old, lead.company):
                changes["company"] = lead.company

        for name in ("timezone", "region"):
            value = getattr(lead, name)
            if value and value != contact[name] and (overwrite or not contact[name]):
                changes[name] = value
        if not contact["source"] and (lead.source or self.default_source):
            changes["source"] = lead.source or self.default_source

        custom = loads(contact["custom"], {})
        merged = dict(custom)
        for key, value in lead.custom.items():
            if key == "import_flags":
                flags = list(merged.get(key) or [])
                merged[key] = flags + [f for f in value if f not in flags]
            elif key not in merged or (overwrite and merged[key] != value):
                merged[key] = value
            elif _flag_word(merged[key]) == "no" and _flag_word(value) == "yes":
                # A yes/no flag raised by any record stays raised (Square's
                # "Blocked from online booking" on a merged duplicate).
                merged[key] = value
        if merged != custom:
            changes["custom"] = merged
        return changes

    def _add_identifiers(self, contact, contact_id, lead, email_owners, changes, added):
        conn, now = self.conn, self.now
        status = "bouncing" if lead.bouncing else "ok"
        for email in lead.emails:
            owner = email_owners.get(email)
            if owner is None:
                conn.execute(
                    "INSERT INTO contact_emails (contact_id, email, is_primary, status,"
                    " created_at) VALUES (?, ?, ?, ?, ?)",
                    [
                        contact_id,
                        email,
                        int(not contact["email"] and not added["emails"]),
                        status,
                        now,
                    ],
                )
                added["emails"].append(email)
                email_owners[email] = contact_id
        if not contact["email"] and added["emails"]:
            changes["email"] = added["emails"][0]

        existing = {
            r[0]
            for r in conn.execute(
                "SELECT phone FROM contact_phones WHERE contact_id = ?", [contact_id]
            )
        }
        new_primary = None
        for phone in lead.phones:
            if phone.e164 in existing:
                continue
            primary = (
                not contact["phone"] and new_primary is None and phone.kind != "fax"
            )
            conn.execute(
                "INSERT INTO contact_phones (contact_id, phone, extension, kind,"
                " is_primary, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    contact_id,
                    phone.e164,
                    phone.extension,
                    phone.kind,
                    int(primary),
                    now,
                ],
            )
            existing.add(phone.e164)
            added["phones"].append(phone.e164)
            if primary:
                new_primary = phone.e164
        if new_primary:
            changes["phone"] = new_primary

    def _add_tags(self, contact_id: int, lead: Lead, made_here: bool, added) -> None:
        if not lead.tags:
            return
        current = {
            r[0]
            for r in self.conn.execute(
                "SELECT tag FROM contact_tags WHERE contact_id = ?", [contact_id]
            )
        }
        for tag in lead.tags:
            if tag in current:
                continue
            if made_here:
                self.conn.execute(
                    "INSERT INTO contact_tags (contact_id, tag, created_at)"
                    " VALUES (?, ?, ?)",
                    [contact_id, tag, self.now],
                )
            else:
                add_tag(
                    self.db, contact_id, tag, clock=self.clock, source=self.event_source
                )
            added["tags"].append(tag)

    def _merge_consent(self, contact_id: int, lead: Lead) -> bool:
        """Opt-outs always apply and stick; an opt-in only fills a blank."""
        changed = False
        for channel, (status, at) in lead.consent.items():
            current = consent_status(self.db, contact_id, channel)
            if (
                status == "opted_out"
                and current != "opted_out"
                or (status == "opted_in" and current is None)
            ):
                changed |= set_consent(
                    self.db,
                    contact_id,
                    channel,
                    status,
                    clock=self.clock,
                    source=self.consent_source,
                    at=at,
                    detail={"batch_id": self.batch_id},
                )
        return changed

    def _mark_bouncing(self, contact_id: int, lead: Lead) -> bool:
        if not lead.bouncing or not lead.emails:
            return False
        marks = ",".join("?" * len(lead.emails))
        cursor = self.conn.execute(
            f"UPDATE contact_emails SET status = 'bouncing' WHERE contact_id = ?"
            f" AND status != 'bouncing' AND email IN ({marks})",
            [contact_id, *lead.emails],
        )
        return cursor.rowcount > 0

    def _record_merge(
        self, contact_id, lead, contact, changes, added, made_here
    ) -> None:
        data = {
            "file": self.file_label,
            "batch_id": self.batch_id,
            "row": lead.row,
            "fields": sorted(k for k in changes if k != "display_name"),
            **{k: v for k, v in added.items() if v},
        }
        seen_name = _person(lead.first_name, lead.last_name)
        if seen_name and fold_name(seen_name) != fold_name(
            _person(contact["first_name"], contact["last_name"])
        ):
            data["name_in_file"] = seen_name
        record_event(
            self.db,
            contact_id,
            "contact.merged",
            clock=self.clock,
            data=data,
            source=self.event_source,
            run_hooks=self.run_hooks,
        )


def _person(first: str | None, last: str | None) -> str:
    return " ".join(part for part in (first or "", last or "") if part)


def _flag_word(value) -> str | None:
    text = str(value).strip().lower()
    if text in ("yes", "true", "y"):
        return "yes"
    if text in ("no", "false", "n"):
        return "no"
    return None


def _better(new: str, old: str) -> bool:
    return name_quality(new) > name_quality(old)
