"""``cxm reviews import``: public reviews from platform exports.

Two shapes are read: a CSV with platform, author, rating, text and date
columns (header names are matched loosely; any encoding or delimiter the lead
importer reads), and Google Business Profile JSON (the API's ``reviews`` pages
or a Takeout file of the same shape: ``reviewer.displayName``, ``starRating``
``ONE``..``FIVE``, ``comment``, ``createTime`` with nanoseconds).

Every review is kept. One whose author matches exactly one contact (by email,
else by full name, else by "First L." initial) goes on that contact's timeline
as ``review.received`` and is linked to the request it followed; the rest are
kept unmatched, with a note saying why. The whole file is checked before
anything is written: a bad row stops the import with its line number and
nothing is imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cxm_cli import clock as clocks
from cxm_cli.errors import InputError
from cxm_cli.events import record_event
from cxm_cli.importing.reader import (
    BrokenRecord,
    CsvRecords,
    detect_delimiter,
    detect_encoding,
    is_blank,
    open_input,
)
from cxm_cli.importing.values import fold_name
from cxm_cli.reviews.ratings import parse_rating
from cxm_cli.store import fetch_one, write_transaction

log = logging.getLogger(__name__)

# A public review within this many days after a request counts as gained by it.
ATTRIBUTION_DAYS = 60
MAX_PROBLEMS_SHOWN = 10
GOOGLE_STARS = {"ONE": 1, "TWO": 2, "THREE": 3, "FOUR": 4, "FIVE": 5}
ANONYMOUS_NAMES = {"a google user", "anonymous", "google user", "a facebook user"}

COLUMN_ALIASES = {
    "platform": {"platform", "site", "source", "channel", "reviewsite", "network"},
    "author": {
        "author",
        "reviewer",
        "name",
        "reviewername",
        "customer",
        "customername",
        "displayname",
        "authorname",
        "user",
        "username",
        "fullname",
    },
    "email": {"email", "authoremail", "revieweremail", "customeremail", "emailaddress"},
    "rating": {"rating", "stars", "score", "starrating", "starratingvalue"},
    "text": {
        "text",
        "review",
        "comment",
        "body",
        "reviewtext",
        "content",
        "message",
        "reviewbody",
        "recommendation",
    },
    "date": {
        "date",
        "reviewdate",
        "createtime",
        "created",
        "createdat",
        "time",
        "reviewedat",
        "datetime",
        "posted",
        "postedat",
        "timestamp",
    },
    "id": {"id", "reviewid", "externalid", "reviewidentifier"},
    "reply": {"reply", "response", "ownerreply", "businessresponse", "ownerresponse"},
}
DATE_FORMATS_US = ("%m/%d/%Y", "%m/%d/%y", "%m-%d-%Y")
DATE_FORMATS_DAY_FIRST = ("%d/%m/%Y", "%d/%m/%y", "%d.%m.%Y", "%d-%m-%Y")
DATE_FORMATS_WORDS = ("%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y")
_TRANSLATED = re.compile(
    r"\(Translated by Google\)\s*(?P<translated>.*?)\s*\(Original\)\s*(?P<original>.*)",
    re.S,
)
_ORIGINAL_FIRST = re.compile(
    r"\(Original\)\s*(?P<original>.*?)\s*\(Translated by Google\)\s*(?P<translated>.*)",
    re.S,
)


@dataclass
class ReviewRecord:
    line: int
    platform: str
    external_id: str
    author: str | None
    author_email: str | None
    rating: int | None
    body: str | None
    body_translated: str | None
    reply: str | None
    reviewed_at: str


@dataclass
class ImportSummary:
    file: str
    format: str
    rows: int = 0
    imported: int = 0
    duplicates: int = 0
    matched: int = 0
    unmatched: int = 0
    linked_to_requests: int = 0
    platforms: dict[str, int] = field(default_factory=dict)
    unmatched_notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "rows": self.rows,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "linked_to_requests": self.linked_to_requests,
            "platforms": self.platforms,
            "dry_run": self.dry_run,
        }


# ---------------------------------------------------------------- reading


def read_reviews(
    workspace, source, *, platform: str | None = None, encoding: str | None = None
) -> tuple[str, str, list[ReviewRecord]]:
    """(file name, format, records) or InputError naming every bad row."""
    with open_input(source) as input_file:
        file_encoding = detect_encoding(input_file.path, encoding, name=input_file.name)
        with input_file.path.open(encoding=file_encoding, errors="replace") as handle:
            head = handle.read(512).lstrip("\ufeff \t\r\n")
        if head.startswith(("{", "[")):
            records = _read_google_json(input_file.path, file_encoding, input_file.name)
            return input_file.name, "google-json", records
        records = _read_csv(workspace, input_file, file_encoding, platform)
        return input_file.name, "csv", records


def _read_csv(workspace, input_file, encoding: str, platform: str | None):
    delimiter = detect_delimiter(input_file.path, encoding)
    table = CsvRecords(input_file.path, encoding, delimiter, input_file.name)
    header = table.header()
    columns = _map_columns(header)
    name = input_file.name

    missing = [c for c in ("rating", "date") if c not in columns]
    if "platform" not in columns and not platform:
        missing.append("platform (or pass --platform)")
    if missing:
        raise InputError(
            f"{name}: no {', '.join(missing)} column",
            hint="a review CSV needs platform, author, rating, text and date "
            f"columns; found: {', '.join(header) or 'nothing'}",
        )

    records: list[ReviewRecord] = []
    problems: list[str] = []
    for number, row in table:
        if is_blank(row):
            continue
        line = number + 1  # the header is line 1
        if isinstance(row, BrokenRecord):
            problems.append(f"{name}: line {line}: {row.reason}")
            continue

        def cell(role: str, row=row) -> str:
            index = columns.get(role)
            if index is None or index >= len(row):
                return ""
            return row[index].strip()

        try:
            records.append(
                _csv_record(workspace, line, cell, platform or cell("platform"))
            )
        except ValueError as exc:
            problems.append(f"{name}: line {line}: {exc}")
    _raise_problems(problems)
    return records


def _map_columns(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, title in enumerate(header):
        compact = re.sub(r"[^a-z0-9]", "", title.lower())
        for role, aliases in COLUMN_ALIASES.items():
            if compact in aliases and role not in columns:
                columns[role] = index
    return columns


def _csv_record(workspace, line: int, cell, platform_text: str) -> ReviewRecord:
    platform = _platform_key(platform_text)
    if not platform:
        raise ValueError("platform is empty")
    rating_text = cell("rating")
    rating = None
    if rating_text:
        rating = parse_rating(rating_text)
        if rating is None:
            raise ValueError(f"rating {rating_text!r} is not a score from 1 to 5")
    date_text = cell("date")
    if not date_text:
        raise ValueError("date is empty")
    reviewed_at = parse_review_date(workspace, date_text)

    author = cell("author") or None
    body, translated = split_translation(cell("text") or None)
    email = (cell("email") or "").lower() or None
    external_id = cell("id") or _fingerprint(platform, author, reviewed_at, body)
    return ReviewRecord(
        line=line,
        platform=platform,
        external_id=external_id,
        author=author,
        author_email=email,
        rating=rating,
        body=body,
        body_translated=translated,
        reply=cell("reply") or None,
        reviewed_at=reviewed_at,
    )


def _read_google_json(path: Path, encoding: str, name: str) -> list[ReviewRecord]:
    try:
        document = json.loads(path.read_text(encoding=encoding))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}: line {exc.lineno}: not valid JSON ({exc.msg})"
        ) from None

    reviews = list(_google_reviews(document))
    if not reviews and not _is_review_page(document):
        raise InputError(
            f"{name}: no Google reviews found",
            hint='expected the Business Profile API\'s {"reviews": [...]} page '
            "or a list of such pages",
        )
    records: list[ReviewRecord] = []
    problems: list[str] = []
    for position, review in enumerate(reviews, start=1):
        try:
            records.append(_google_record(position, review))
        except ValueError as exc:
            problems.append(f"{name}: review #{position}: {exc}")
    _raise_problems(problems)
    return records


def _is_review_page(document: Any) -> bool:
    pages = document if isinstance(document, list) else [document]
    return all(isinstance(p, dict) and "reviews" in p for p in pages) and bool(pages)


def _google_reviews(document: Any):
    """Reviews from one API page, a list of pages, or a bare list of reviews."""
    if isinstance(document, dict):
        if isinstance(document.get("reviews"), list):
            yield from document["reviews"]
        elif "starRating" in document or "reviewId" in document:
            yield document
        return
    if isinstance(document, list):
        for item in document:
            yield from _google_reviews(item)


def _google_record(position: int, review: dict) -> ReviewRecord:
    if not isinstance(review, dict):
        raise ValueError("not a JSON object")
    star = str(review.get("starRating") or "").upper()
    if star and star != "STAR_RATING_UNSPECIFIED" and star not in GOOGLE_STARS:
        raise ValueError(f"starRating {star!r} is not ONE..FIVE")
    created = review.get("createTime") or review.get("updateTime")
    if not created:
        raise ValueError("no createTime")
    try:
        reviewed_at = clocks.iso(_parse_rfc3339(str(created)))
    except ValueError:
        raise ValueError(f"createTime {created!r} is not a time") from None

    reviewer = review.get("reviewer") or {}
    author = None
    if not reviewer.get("isAnonymous"):
        author = (reviewer.get("displayName") or "").strip() or None
    body, translated = split_translation(review.get("comment"))
    reply = (review.get("reviewReply") or {}).get("comment")
    external_id = review.get("reviewId") or review.get("name")
    if not external_id:
        external_id = _fingerprint("google", author, reviewed_at, body)
    return ReviewRecord(
        line=position,
        platform="google",
        external_id=str(external_id),
        author=author,
        author_email=None,
        rating=GOOGLE_STARS.get(star),
        body=body,
        body_translated=translated,
        reply=reply,
        reviewed_at=reviewed_at,
    )


def _raise_problems(problems: list[str]) -> None:
    if not problems:
        return
    shown = problems[:MAX_PROBLEMS_SHOWN]
    more = len(problems) - len(shown)
    message = "; ".join(shown) + (f"; and {more} more" if more else "")
    raise InputError(
        f"{len(problems)} bad review rows, nothing imported: {message}",
        hint="fix the rows named and import the file again",
    )


def _platform_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", (text or "").strip().lower()).strip("-")


def _fingerprint(platform, author, reviewed_at, body) -> str:
    basis = "\x1f".join([platform, fold_name(author), reviewed_at[:10], body or ""])
    return "sha1:" + hashlib.sha1(basis.encode("utf-8")).hexdigest()[:20]


def split_translation(comment: str | None) -> tuple[str | None, str | None]:
    """(original, Google's translation) from a comment Google translated."""
    if not comment:
        return None, None
    for pattern in (_TRANSLATED, _ORIGINAL_FIRST):
        match = pattern.search(comment)
        if match:
            original = match.group("original").strip() or None
            return original, match.group("translated").strip() or None
    return comment.strip() or None, None


def _parse_rfc3339(text: str) -> datetime:
    # Google writes nanoseconds; Python reads at most microseconds.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text.strip())
    return clocks.parse(trimmed)


def parse_review_date(workspace, text: str) -> str:
    """A stored UTC timestamp for a date or time as review exports write it.

    A date without a time is taken as noon in the business's time zone, so
    it stays on the same calendar day wherever it is shown. Slash dates are
    month first in the US and Canada, day first elsewhere.
    """
    text = text.strip()
    try:
        moment = _parse_rfc3339(text)
        if "T" in text or ":" in text:
            return clocks.iso(moment)
    except ValueError:
        pass

    region = workspace.phone_region
    formats = ("%Y-%m-%d", "%Y/%m/%d")
    formats += DATE_FORMATS_US if region in ("US", "CA") else DATE_FORMATS_DAY_FIRST
    formats += DATE_FORMATS_WORDS
    for fmt in formats:
        try:
            day = datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        try:
            zone = ZoneInfo(workspace.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = UTC
        return clocks.iso(datetime.combine(day, time(12, 0), tzinfo=zone))
    raise ValueError(f"date {text!r} is not a date cxm can read (use YYYY-MM-DD)")


# ---------------------------------------------------------------- matching


class ContactMatcher:
    """Finds the one contact a review's author is, or says why not."""

    def __init__(self, db):
        self.db = db
        self.by_name: dict[str, set[int]] = {}
        self.by_first: dict[str, list[tuple[int, str]]] = {}
        rows = db.query("SELECT id, display_name, first_name, last_name FROM contacts")
        for row in rows:
            first = fold_name(row["first_name"])
            last = fold_name(row["last_name"])
            names = {fold_name(row["display_name"]), f"{first} {last}".strip()}
            for name in names - {""}:
                self.by_name.setdefault(name, set()).add(row["id"])
            if first:
                self.by_first.setdefault(first, []).append((row["id"], last))

    def match(self, record: ReviewRecord) -> tuple[int | None, str | None]:
        if record.author_email:
            row = fetch_one(
                self.db,
                "SELECT contact_id FROM contact_emails WHERE email = ?",
                [record.author_email],
            )
            if row:
                return row["contact_id"], None

        name = fold_name(record.author)
        if not name or name in ANONYMOUS_NAMES:
            return None, "anonymous reviewer"
        candidates = set(self.by_name.get(name, set()))
        if not candidates:
            candidates = self._by_initial(name)
        if not candidates:
            return None, "no contact with this name"
        if len(candidates) == 1:
            return candidates.pop(), None

        asked = self._asked_before(candidates, record.reviewed_at)
        if len(asked) == 1:
            return asked.pop(), None
        return None, f"{len(candidates)} contacts have this name"

    def _by_initial(self, name: str) -> set[int]:
        """'Jane S.' (as Google shows many reviewers) -> first name + initial."""
        parts = name.replace(".", " ").split()
        if len(parts) != 2 or len(parts[1]) != 1:
            return set()
        first, initial = parts
        return {
            contact_id
            for contact_id, last in self.by_first.get(first, [])
            if last.startswith(initial)
        }

    def _asked_before(self, candidates: set[int], reviewed_at: str) -> set[int]:
        ids = sorted(candidates)
        rows = self.db.query(
            "SELECT DISTINCT contact_id FROM review_requests "
            f"WHERE contact_id IN ({', '.join('?' for _ in ids)}) "
            "AND sent_at IS NOT NULL AND sent_at <= ?",
            [*ids, reviewed_at],
        )
        return {row["contact_id"] for row in rows}


def request_before(db, contact_id: int, reviewed_at: str) -> int | None:
    """The request a public review followed, within the attribution window."""
    since = clocks.iso(clocks.parse(reviewed_at) - timedelta(days=ATTRIBUTION_DAYS))
    row = fetch_one(
        db,
        "SELECT id FROM review_requests WHERE contact_id = ? AND sent_at IS NOT NULL "
        "AND sent_at <= ? AND sent_at >= ? ORDER BY sent_at DESC LIMIT 1",
        [contact_id, reviewed_at, since],
    )
    return row["id"] if row else None


# ---------------------------------------------------------------- importing


def import_reviews(
    workspace,
    db,
    clock,
    source,
    *,
    platform: str | None = None,
    encoding: str | None = None,
    dry_run: bool = False,
) -> ImportSummary:
    """Import a review export; all or nothing."""
    platform = _platform_key(platform) if platform else None
    name, kind, records = read_reviews(
        workspace, source, platform=platform, encoding=encoding
    )
    summary = ImportSummary(file=name, format=kind, rows=len(records), dry_run=dry_run)
    matcher = ContactMatcher(db)
    now = clocks.now_iso(clock)
    seen: set[tuple[str, str]] = set()

    with write_transaction(db):
        for record in records:
            key = (record.platform, record.external_id)
            exists = fetch_one(
                db,
                "SELECT id FROM reviews WHERE platform = ? AND external_id = ?",
                list(key),
            )
            if exists or key in seen:
                # Limitation: a review kept unmatched is not matched again on
                # a later import, even if its author became a contact since.
                summary.duplicates += 1
                continue
            seen.add(key)

            contact_id, note = matcher.match(record)
            request_id = (
                request_before(db, contact_id, record.reviewed_at)
                if contact_id
                else None
            )
            summary.imported += 1
            summary.platforms[record.platform] = (
                summary.platforms.get(record.platform, 0) + 1
            )
            if contact_id:
                summary.matched += 1
            else:
                summary.unmatched += 1
                summary.unmatched_notes.append(f"line {record.line}: {note}")
            if request_id:
                summary.linked_to_requests += 1
            if dry_run:
                continue
            _store(db, clock, record, contact_id, request_id, note, name, now)
    log.info(
        "imported %d reviews (%d matched, %d duplicates)",
        summary.imported,
        summary.matched,
        summary.duplicates,
    )
    return summary


def _store(db, clock, record, contact_id, request_id, note, file_name, now) -> None:
    review_id = (
        db["reviews"]
        .insert(
            {
                "platform": record.platform,
                "external_id": record.external_id,
                "author": record.author,
                "author_email": record.author_email,
                "rating": record.rating,
                "body": record.body,
                "body_translated": record.body_translated,
                "reply": record.reply,
                "reviewed_at": record.reviewed_at,
                "contact_id": contact_id,
                "request_id": request_id,
                "match_note": note,
                "source_file": Path(file_name).name,
                "imported_at": now,
            }
        )
        .last_pk
    )
    if contact_id is None:
        return
    data: dict[str, Any] = {
        "platform": record.platform,
        "rating": record.rating,
        "review_id": review_id,
    }
    if record.body:
        data["text"] = record.body
    if request_id:
        data["request_id"] = request_id
    record_event(
        db,
        contact_id,
        "review.received",
        clock=clock,
        at=record.reviewed_at,
        data=data,
        source="import",
    )
