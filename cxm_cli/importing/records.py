"""One input record in, one normalised lead (or a reject with its reason) out.

Nothing here touches the database: a :class:`RecordMapper` turns a record's
cells into a :class:`Lead` using the layout's column roles, and the merge step
decides what the lead does to the workspace.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cxm_cli import clock as clocks
from cxm_cli.importing.consent_columns import looks_consent
from cxm_cli.importing.formats import HEADER_RULE_LAYOUTS, Layout, Role, role_for
from cxm_cli.importing.values import (
    EMPTY_DATES,
    DateValue,
    PhoneResult,
    clean_cell,
    consent_flag,
    country_code,
    is_placeholder,
    normalise_email,
    normalise_phone,
    opt_out_flag,
    parse_date,
    parse_money,
    phone_kind,
    repair_mojibake,
    split_full_name,
    truthy,
)

DATE_FIELDS = {
    "created",
    "birthday",
    "starts_at",
    "optin_time",
    "unsub_time",
    "clean_time",
}
_MULTI_SPLIT = " ::: "
_META_ID = re.compile(r"^(?:l|ag|as|c|f|p):(\d+)$")
_TEST_LEAD = "<test lead"
_TAGGED_PHONE = re.compile(r"^(.*?)(?:\s*\((mobile|home|work|fax|other)\))?$")
# Opt-out columns and the channels they stop (voicemail drops follow SMS).
OPT_OUT_CHANNELS = {
    "email_opt_out": ("email",),
    "sms_opt_out": ("sms",),
    "opt_out": ("email", "sms"),
}
# Consent columns and the channels they grant (or, read strictly, refuse).
OPT_IN_CHANNELS = {
    "email_opt_in": ("email",),
    "sms_opt_in": ("sms",),
    "opt_in": ("email", "sms"),
}
# What separates two phones in one cell. Tried one at a time, so a "/" inside
# a number ("030/1234567") only splits when every part is a phone on its own.
_PHONE_SEPARATORS = (
    re.compile(r"\s*[\r\n]+\s*"),
    re.compile(r"\s*;\s*"),
    re.compile(r"\s+(?:or|and)\s+", re.IGNORECASE),
    re.compile(r"\s*&\s*"),
    re.compile(r"\s*,\s*"),
    re.compile(r"\s+/\s+"),
    re.compile(r"\s*/\s*"),
)
_ANY_PHONE_SEPARATOR = re.compile(r"\s*(?:[\r\n;,&/]|\s(?:or|and)\s)\s*", re.IGNORECASE)
# Between two emails in one cell: ";", ",", "/", "&", "|", "or", spaces.
_EMAIL_SEPARATOR = re.compile(r"\s+(?:or|and)\s+|[;,\s/&|]+", re.IGNORECASE)


@dataclass
class Phone:
    e164: str
    extension: str | None
    kind: str | None


@dataclass
class Lead:
    row: int
    first_name: str = ""
    last_name: str = ""
    company: str = ""
    emails: list[str] = field(default_factory=list)
    phones: list[Phone] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    source: str | None = None
    created_at: str | None = None  # stored UTC text: earliest creation/submission
    timezone: str | None = None
    region: str | None = None
    custom: dict = field(default_factory=dict)
    # channel -> (opted_in | opted_out, stored time or None)
    consent: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    bouncing: bool = False  # Mailchimp "cleaned": the address hard-bounced
    # The source lists this person as an opt-out or a bounce (Mailchimp's
    # unsubscribed and cleaned exports), not as someone who asked for contact:
    # a contact made from it is kept to honour the opt-out, but is no new lead.
    suppression: bool = False
    # A row of cxm's own export: a contact some workspace already had, so it
    # is imported as an existing contact (contact.imported), no new lead.
    existing: bool = False
    # cxm's export: a phone of this contact had opted out of texts under
    # another contact there (a household number), so it stays blocked.
    number_opted_out: bool = False
    events: list[tuple[str, str | None, dict]] = field(default_factory=list)
    record_key: str | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (column, text)


@dataclass
class Reject:
    row: int
    column: str
    reason: str
    warnings: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class MapperSettings:
    layout: Layout
    overrides: dict[str, Role]
    region: str  # default phone region
    zone: str  # workspace time zone, for date-times without an offset
    date_orders: dict[str, str]  # column -> "MDY" / "DMY"
    date_format: str | None  # --date-format: MDY, DMY, YMD or a strptime pattern
    source: str | None
    tags: list[str]
    file_label: str
    # Keep every record's cells, not only rejected ones: a row may still be
    # rejected when merged (an erased person's identifiers), and its rejects
    # line needs them.
    keep_cells: bool = False
    # Leading columns not imported: a rejects file's row, column and reason.
    skip_leading: int = 0


class RecordMapper:
    """Maps records of one file; caches the column roles of its header."""

    def __init__(self, settings: MapperSettings):
        self.settings = settings
        self._headers: object = None
        self._roles: list[Role] = []
        self._keys: list[str] = []
        self._role_cache: dict[str, Role] = {}
        self.has_unsubscribe = False
        self.has_clean = False
        self.has_optin = False
        # Consent-looking columns kept as custom fields, already pointed out.
        self._consent_hinted: set[str] = set()

    def prepare(self, headers: list[str]) -> None:
        """Fix the roles for a header row (CSV) so each record reuses them."""
        self._headers = headers
        self._keys = _unique_keys(headers)
        self._roles = [self.role(h) for h in headers]
        for index in range(min(self.settings.skip_leading, len(headers))):
            self._roles[index] = ("ignore", None)
        fields_present = {role[0] for role in self._roles}
        self.has_unsubscribe = "unsub_time" in fields_present
        self.has_clean = "clean_time" in fields_present
        self.has_optin = "optin_time" in fields_present

    @property
    def keys(self) -> list[str]:
        """The prepared header's names as used for custom fields and dates."""
        return self._keys

    def role(self, header: str) -> Role:
        cached = self._role_cache.get(header)
        if cached is None:
            cached = role_for(self.settings.layout, header, self.settings.overrides)
            self._role_cache[header] = cached
        return cached

    def map_row(self, number: int, headers: list[str], row: list[str]) -> Lead | Reject:
        """A CSV record: cells in header order."""
        if len(row) > len(headers) and any(
            cell.strip() for cell in row[len(headers) :]
        ):
            return Reject(
                number,
                "",
                f"malformed line: {len(row)} fields "
                f"where the header has {len(headers)}",
            )
        roles, keys = self._roles, self._keys
        cells = [
            (keys[index], roles[index], value)
            for index, value in enumerate(row[: len(headers)])
            if value and not value.isspace()
        ]
        return self._map(number, cells)

    def map_pairs(self, number: int, pairs: list[tuple[str, str]]) -> Lead | Reject:
        """A JSON Lines object or a vCard: key/value pairs, keys may repeat."""
        cells = [
            (key, self.role(key), value)
            for key, value in pairs
            if value and value.strip()
        ]
        fields_present = {role[0] for _, role, _ in cells}
        self.has_unsubscribe = "unsub_time" in fields_present
        self.has_clean = "clean_time" in fields_present
        self.has_optin = "optin_time" in fields_present
        return self._map(number, cells)

    # ------------------------------------------------------------ the mapping

    def _map(self, number: int, cells: list[tuple[str, Role, str]]) -> Lead | Reject:
        settings = self.settings
        lead = Lead(row=number)
        names: dict[str, str] = {}
        raw_emails: list[tuple[str, str, object]] = []
        raw_phones: list[tuple[str, str, object]] = []
        labels: dict[tuple[str, object], str] = {}
        dates: dict[str, DateValue] = {}
        opt_out_dates: dict[str, DateValue] = {}  # channel -> when they opted out
        event: dict = {}
        questions: dict[object, str] = {}
        responses: dict[object, str] = {}
        country = None
        country_column = ""
        external_id = None
        # Facts about this one record (a booking's id, an ad's campaign): kept
        # on its timeline event; on the contact only for non-event exports.
        record_fields: dict[str, str] = {}

        for header, (kind, argument), raw in cells:
            value = clean_cell(raw)
            if not value:
                continue
            if value.lower().startswith(_TEST_LEAD):
                return Reject(
                    number, header, "test lead from the Lead Ads testing tool"
                )

            if kind in (
                "first_name",
                "middle_name",
                "last_name",
                "full_name",
                "company",
            ):
                if not is_placeholder(value) and kind not in names:
                    names[kind] = repair_mojibake(" ".join(value.split()))
            elif kind == "email":
                for part in _split_multi(value, emails=True):
                    raw_emails.append((part, header, argument))
            elif kind == "email_label":
                labels[("email", argument)] = value
            elif kind == "phone":
                for part in _split_multi(value, emails=False):
                    phone_argument = argument
                    if argument == "tagged":  # cxm's export: "+1312... x12 (work)"
                        match = _TAGGED_PHONE.match(part)
                        part, phone_argument = match.group(1), match.group(2)
                    raw_phones.append((part, header, phone_argument))
            elif kind == "phone_label":
                labels[("phone", argument)] = value
            elif kind == "tags":
                lead.tags.extend(
                    t for t in parse_tags(value, argument) if t not in lead.tags
                )
            elif kind == "source":
                lead.source = lead.source or value
            elif kind in DATE_FIELDS:
                parsed = self._date(header, value)
                if parsed.problem:
                    lead.warnings.append((header, f"{parsed.problem}; kept as text"))
                    lead.custom[header] = value
                    lead.custom.setdefault("import_flags", []).append(
                        f"{header}: {parsed.problem}"
                    )
                else:
                    dates.setdefault(kind, parsed)
                    if kind == "birthday":
                        lead.custom["birthday"] = parsed.text()
            elif kind == "notes":
                previous = lead.custom.get("notes")
                lead.custom["notes"] = f"{previous}\n{value}" if previous else value
            elif kind == "region":
                if len(value) <= 3 and value.isalpha():
                    lead.region = lead.region or value.upper()
                else:
                    lead.custom.setdefault(header, value)
            elif kind == "country":
                if not country:
                    country, country_column = value, header
                lead.custom.setdefault(header, value)
            elif kind == "timezone":
                if _valid_zone(value):
                    lead.timezone = lead.timezone or value
                else:
                    lead.custom.setdefault(header, value)
            elif kind in OPT_OUT_CHANNELS:
                self._opt_out(lead, header, value, kind, opt_out_dates)
            elif kind in OPT_IN_CHANNELS:
                self._opt_in(lead, header, value, kind, argument)
            elif kind == "email_status":
                status = value.strip().lower()
                if status in ("unsubscribed", "opted out", "opted_out"):
                    lead.consent["email"] = ("opted_out", None)
                elif status in ("subscribed", "opted in", "opted_in"):
                    lead.consent.setdefault("email", ("opted_in", None))
                lead.custom[header] = value
            elif kind == "consent":
                if value in ("opted_in", "opted_out"):
                    if value == "opted_out" or argument not in lead.consent:
                        lead.consent[argument] = (value, None)
                else:
                    # Not cxm's own words: a plain list's "SMS Consent" column
                    # (same header); "no" there is an opt-out.
                    self._opt_in(lead, header, value, f"{argument}_opt_in", "strict")
            elif kind == "cxm_id":
                lead.existing = True
            elif kind == "bouncing":  # cxm's export: its bouncing addresses
                lead.bouncing = True
            elif kind == "number_opt_out":  # cxm's export: a blocked number
                lead.number_opted_out = True
            elif kind == "custom_json":
                lead.custom.update(_json_object(value))
            elif kind == "money":
                amount = parse_money(value)
                lead.custom[header] = amount if amount is not None else value
            elif kind == "external_id":
                external_id = external_id or _strip_prefix(value)
                record_fields[header] = _strip_prefix(value)
            elif kind in ("form", "service"):
                event[kind] = value
                record_fields[header] = value
            elif kind == "cancelled":
                event["cancelled"] = bool(truthy(value))
                record_fields[header] = value
            elif kind == "response_type":
                event["partial"] = value.strip().lower() == "partial"
                record_fields[header] = value
            elif kind == "event_field":
                record_fields[header] = _strip_prefix(value)
            elif kind == "custom_unless":
                if value != argument:
                    lead.custom[header] = value
            elif kind == "question":
                questions[argument] = value
            elif kind == "response":
                responses[argument] = value
            elif kind == "ignore" or value in EMPTY_DATES:
                continue
            else:
                lead.custom[header] = _strip_prefix(value)

        for slot, question in questions.items():
            if slot in responses:
                lead.custom[question] = responses.pop(slot)
        for slot, answer in responses.items():
            lead.custom[f"Response {slot}"] = answer

        region = self._row_region(country, lead.timezone)
        unknown_country = None
        if country and country_code(country) is None:
            unknown_country = f"country {country!r} not recognised"
        problems = self._identifiers(
            lead, raw_emails, raw_phones, labels, region, unknown_country
        )
        if unknown_country and lead.phones:
            lead.warnings.append(
                (country_column, f"{unknown_country}; phones read as {region} numbers")
            )
        if not lead.emails and not lead.phones:
            column, reason = problems[0] if problems else ("", "no email or phone")
            if problems:
                reason = f"no usable email or phone: {reason}"
            return Reject(
                number, column, one_line(reason), _one_line_all(lead.warnings)
            )

        self._names(lead, names)
        self._consent_and_times(lead, dates, opt_out_dates)
        self._events(lead, event, dates, external_id, cells, record_fields)
        if self.settings.layout.event is None:
            for key, value in record_fields.items():
                lead.custom.setdefault(key, value)
        if settings.source:
            lead.source = settings.source
        for tag in settings.tags:
            if tag not in lead.tags:
                lead.tags.append(tag)
        self._hint_consent_columns(lead, cells)
        lead.warnings = _one_line_all(lead.warnings)
        return lead

    def _hint_consent_columns(self, lead: Lead, cells) -> None:
        """One warning per file for each column that looks like consent but is
        kept as a custom field, so an opt-out is never ignored in silence."""
        # Limitation: it is a row warning on the first imported record with a
        # value in that column, not a file-level note (those come from the
        # pipeline); past the summary's 200 warning samples it is only counted.
        if self.settings.layout.name not in HEADER_RULE_LAYOUTS:
            return
        for header, (kind, _), _ in cells:
            if kind != "custom" or header in self._consent_hinted:
                continue
            if not looks_consent(header):
                continue
            self._consent_hinted.add(header)
            lead.warnings.append(
                (
                    header,
                    f"column {header!r} looks like consent but is kept as a "
                    "custom field; if it holds opt-outs, import again with "
                    f'--map "{header}=sms_opt_out" (or email_opt_out, opt_out, '
                    "sms_opt_in, email_opt_in)",
                )
            )

    def _date(self, header: str, value: str) -> DateValue:
        settings = self.settings
        fmt = settings.date_format
        if fmt and "%" in fmt:
            try:
                moment = datetime.strptime(value.strip(), fmt)
            except ValueError:
                return DateValue(problem=f"{value} does not match --date-format {fmt}")
            if "%H" in fmt or "%I" in fmt:
                return DateValue(day=moment.date(), moment=moment)
            return DateValue(day=moment.date())
        order = fmt or settings.date_orders.get(header) or "MDY"
        if order == "YMD":
            order = "MDY"  # four-digit years come first and read the same way
        return parse_date(value, order=order)

    def _row_region(self, country: str | None, zone: str | None) -> str:
        if country:
            code = country_code(country)
            if code:
                return code
        if zone:
            code = zone_country(zone)
            if code:
                return code
        return self.settings.region

    def _identifiers(
        self, lead, raw_emails, raw_phones, labels, region, unknown_country=None
    ) -> list:
        problems: list[tuple[str, str]] = []
        for value, header, _slot in raw_emails:
            result = normalise_email(value)
            if result.email is None:
                problems.append((header, result.problem))
                lead.warnings.append((header, f"email dropped: {result.problem}"))
                continue
            if result.typo_hint:
                lead.warnings.append(
                    (header, f"{result.email}: did you mean {result.typo_hint}? (kept)")
                )
            if result.email not in lead.emails:
                lead.emails.append(result.email)

        phone_parts = [
            (part, result, header, argument)
            for value, header, argument in raw_phones
            for part, result in _phone_parts(value, region)
        ]
        for _value, result, header, argument in phone_parts:
            if result.e164 is None:
                problem = result.problem
                if unknown_country:
                    # The likely cause: the number was read in the wrong country.
                    problem = f"{problem} ({unknown_country}, read as {region})"
                problems.append((header, problem))
                lead.warnings.append((header, f"phone dropped: {problem}"))
                continue
            if result.note:
                lead.warnings.append((header, result.note))
            if isinstance(argument, int):  # numbered column: kind from its label
                phone_type = phone_kind(labels.get(("phone", argument)))
            else:
                phone_type = argument if isinstance(argument, str) else None
            if all(p.e164 != result.e164 for p in lead.phones):
                lead.phones.append(Phone(result.e164, result.extension, phone_type))
        # A damaged number (scientific notation) is the reason to report first.
        problems.sort(key=lambda item: "scientific" not in (item[1] or ""))
        return problems

    def _names(self, lead: Lead, names: dict[str, str]) -> None:
        # A stray comma from a "Last, First" habit never stays in a name.
        first = names.get("first_name", "").strip(" ,")
        last = names.get("last_name", "").strip(" ,")
        if not first and not last and names.get("full_name"):
            first, last = split_full_name(names["full_name"])
        if names.get("middle_name"):
            lead.custom.setdefault("middle_name", names["middle_name"])
        lead.first_name, lead.last_name = first, last
        lead.company = names.get("company", "")

    def _zone(self, lead: Lead) -> str:
        """Zone for times written without an offset: the export's, the row's
        own time zone column, or the workspace's."""
        return self.settings.layout.naive_zone or lead.timezone or self.settings.zone

    def _opt_out(self, lead, header, value, kind, opt_out_dates) -> None:
        """An opt-out column's cell: a yes/no word, the date they opted out, or
        anything else, which counts as an opt-out (the safe reading) with a
        warning naming the value, and is kept as a custom field."""
        # Limitation: the day/month order of an opt-out column is not voted on
        # like a date column's; an ambiguous 02/01/2024 is read month first
        # unless --date-format says otherwise (only the opt-out's time is off).
        flag = opt_out_flag(value)
        if flag is False:
            return
        if flag is None:
            when = self._date(header, value)
            if when.day is not None and not when.problem:
                for channel in OPT_OUT_CHANNELS[kind]:
                    opt_out_dates.setdefault(channel, when)
            else:
                lead.warnings.append(
                    (
                        header,
                        f"opt-out value {value!r} not understood: "
                        "imported as opted out",
                    )
                )
                lead.custom.setdefault(header, value)
        for channel in OPT_OUT_CHANNELS[kind]:
            lead.consent[channel] = ("opted_out", None)

    def _opt_in(self, lead, header, value, kind, argument) -> None:
        """A consent column's cell. Read strictly (a consent column found by
        its header words, or named with --map), a "no" is an opt-out: the safe
        side for texting laws. A vendor's own column keeps its reading: yes is
        an opt-in, anything else says nothing."""
        channels = OPT_IN_CHANNELS[kind]
        if argument != "strict":
            if truthy(value):
                for channel in channels:
                    lead.consent.setdefault(channel, ("opted_in", None))
            return

        flag = consent_flag(value)
        if flag is None and self._date(header, value).day is not None:
            flag = True  # the day they agreed
        if flag is True:
            for channel in channels:
                lead.consent.setdefault(channel, ("opted_in", None))
        elif flag is False:
            for channel in channels:
                lead.consent[channel] = ("opted_out", None)
        else:
            lead.warnings.append(
                (
                    header,
                    f"consent value {value!r} not understood: no consent "
                    "recorded (map the column or fix the value)",
                )
            )
            lead.custom.setdefault(header, value)

    def _consent_and_times(
        self,
        lead: Lead,
        dates: dict[str, DateValue],
        opt_out_dates: dict[str, DateValue],
    ) -> None:
        zone = self._zone(lead)
        created = dates.get("created")
        if created is not None:
            lead.created_at = _stored(created, zone)
        for channel, when in opt_out_dates.items():
            lead.consent[channel] = ("opted_out", _stored(when, zone))
        if self.has_unsubscribe:
            at = _stored(dates["unsub_time"], zone) if "unsub_time" in dates else None
            lead.consent["email"] = ("opted_out", at)
            lead.suppression = True
        elif self.has_clean:
            lead.bouncing = True
            lead.suppression = True
        elif self.has_optin and "email" not in lead.consent:
            at = _stored(dates["optin_time"], zone) if "optin_time" in dates else None
            lead.consent["email"] = ("opted_in", at)

    # Limitation: a lead's created_time comes from the first record that
    # created it; a later record of the same person with an earlier submission
    # time gets its own event but does not move the lead.created time back.
    def _events(self, lead, event, dates, external_id, cells, record_fields) -> None:
        layout = self.settings.layout
        if layout.event is None:
            return
        values = "\x1f".join(value for _, _, value in cells)
        identity = external_id or hashlib.sha1(values.encode("utf-8")).hexdigest()
        lead.record_key = f"{layout.name}:{identity}"
        source = self.settings.source or layout.name

        if layout.event == "form.submitted":
            if event.get("partial"):
                return
            answers = {
                key: value
                for key, value in lead.custom.items()
                if key not in ("import_flags", "birthday", "notes")
            }
            data = {
                **answers,
                **record_fields,
                "form": event.get("form") or layout.name,
                "source": source,
            }
            if external_id:
                data["lead_id"] = external_id
            lead.events.append(("form.submitted", lead.created_at, data))
            return

        data = {**record_fields, "source": source}
        if external_id:
            data["appointment_id"] = external_id
        if event.get("service"):
            data["service"] = event["service"]
        starts = dates.get("starts_at")
        if starts is not None:
            data["starts_at"] = _stored(starts, self._zone(lead))
        lead.events.append(("appointment.booked", lead.created_at, data))
        if event.get("cancelled"):
            lead.events.append(("appointment.cancelled", None, dict(data)))


def _stored(value: DateValue, zone: str) -> str | None:
    """Stored UTC text for a parsed date or date-time (midnight for dates)."""
    moment = value.moment
    if moment is None and value.day is not None:
        moment = datetime.combine(value.day, datetime.min.time())
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone) if zone else UTC)
    return clocks.iso(moment)


def _split_multi(value: str, *, emails: bool) -> list[str]:
    parts = (
        [p.strip() for p in value.split(_MULTI_SPLIT)]
        if _MULTI_SPLIT in value
        else [value]
    )
    out: list[str] = []
    for part in parts:
        if emails and part.count("@") > 1 and _EMAIL_SEPARATOR.search(part):
            out.extend(p for p in _EMAIL_SEPARATOR.split(part) if p)
        elif not emails and ";" in part:
            out.extend(p.strip() for p in part.split(";") if p.strip())
        elif part:
            out.append(part)
    return out


def _phone_parts(value: str, region: str) -> list[tuple[str, PhoneResult]]:
    """The phones in one cell: itself when it is one number, else its parts
    ("312-555-0101, 312-555-0102", "... or ...", one per line), first first."""
    whole = normalise_phone(value, region)
    if whole.e164 is not None or whole.damaged:
        return [(value, whole)]
    if not _ANY_PHONE_SEPARATOR.search(value.strip()):
        return [(value, whole)]

    for separator in _PHONE_SEPARATORS:
        parts = [part for part in separator.split(value.strip()) if part.strip()]
        if len(parts) < 2:
            continue
        results = [(part, normalise_phone(part, region)) for part in parts]
        if all(result.e164 for _, result in results):
            return results
    # No one separator splits it into phones only: keep the usable ones and
    # name the rest.
    # Limitation: a number written with dial pauses ("555-0101,,12") or a
    # number and its note joined by "&" loses the part that is not a phone.
    parts = [part for part in _ANY_PHONE_SEPARATOR.split(value.strip()) if part]
    results = [(part, normalise_phone(part, region)) for part in parts]
    if any(result.e164 for _, result in results):
        return results
    return [(value, whole)]


def one_line(text: str) -> str:
    """A warning or reason on one terminal line: line breaks shown as ``\\n``."""
    if "\n" not in text and "\r" not in text:
        return text
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def _one_line_all(warnings: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(one_line(column), one_line(text)) for column, text in warnings]


def _unique_keys(headers: list[str]) -> list[str]:
    """Header names as custom-field keys: blanks named, repeats numbered."""
    keys: list[str] = []
    seen: set[str] = set()
    for index, header in enumerate(headers, 1):
        key = header or f"column {index}"
        if key in seen:
            key = f"{key} ({index})"
        seen.add(key)
        keys.append(key)
    return keys


def _json_object(value: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return {"custom": value}
    return parsed if isinstance(parsed, dict) else {"custom": value}


def _strip_prefix(value: str) -> str:
    match = _META_ID.match(value)
    if match:
        return match.group(1)
    if value.startswith("zcrm_"):
        return value[5:]
    return value


SYSTEM_LABELS = {"mycontacts", "my contacts", "starred"}


def parse_tags(value: str, style: object) -> list[str]:
    """Tags from a cell in the style its export writes them."""
    text = value.strip()
    if style == "multi":
        return [p.strip() for p in text.split(_MULTI_SPLIT) if p.strip()]
    if style == "google" or (style == "auto" and _MULTI_SPLIT in text):
        parts = text.split(_MULTI_SPLIT)
        return [p.strip() for p in parts if p.strip() and not p.strip().startswith("*")]
    if style == "quoted" or (style == "auto" and text.startswith('"')):
        return [p for p in re.findall(r'"([^"]*)"', text) if p.strip()] or [text]
    if style == "semicolon" or (style == "auto" and ";" in text and "," not in text):
        parts = text.split(";")
    else:
        parts = text.split(",")
    tags = [p.strip() for p in parts if p.strip()]
    return [t for t in tags if t.lower() not in SYSTEM_LABELS]


@lru_cache(maxsize=1)
def _zone_countries() -> dict[str, str]:
    try:
        text = (
            resources.files("tzdata").joinpath("zoneinfo/zone.tab").read_text("utf-8")
        )
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    zones = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            zones[parts[2].strip()] = parts[0].strip()
    return zones


def zone_country(zone: str) -> str | None:
    return _zone_countries().get(zone.strip())


@lru_cache(maxsize=1024)
def _valid_zone(value: str) -> bool:
    if "/" not in value and value not in ("UTC",):
        return False
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
