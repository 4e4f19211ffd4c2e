"""vCard (.vcf) files, as Apple/iCloud, Google and Outlook write them.

Each card becomes key/value pairs named like CSV headers ("First Name",
"Email", "Phone (mobile)"), so the rest of the importer treats a card like
any other record. Folded lines, Apple's grouped properties
(``item1.TEL`` + ``item1.X-ABLabel``), repeated ``type=`` parameters,
escaped text and quoted-printable (vCard 2.1) are understood.
"""

from __future__ import annotations

import quopri
import re
from collections.abc import Iterator
from pathlib import Path

from cxm_cli.importing.reader import StreamedRecords

_LINE = re.compile(
    r"^(?:(?P<group>[A-Za-z0-9-]+)\.)?(?P<name>[A-Za-z0-9-]+)(?P<params>;[^:]*)?:(?P<value>.*)$"
)
_APPLE_LABEL = re.compile(r"^_\$!<(.*)>!\$_$")
# Limitation: photos, logos, sounds and keys are not imported (cxm has no
# place for binary data); every other property is kept.
_SKIPPED = {
    "BEGIN",
    "END",
    "VERSION",
    "PRODID",
    "REV",
    "PHOTO",
    "LOGO",
    "SOUND",
    "KEY",
    "UID",
    "X-ABUID",
    "X-ABLABEL",
    "X-ABSHOWAS",
    "X-ABADR",
    "X-ABDATE",
}


def is_vcard(path: Path, encoding: str) -> bool:
    with path.open(encoding=encoding, errors="replace") as handle:
        head = handle.read(4096).lstrip("\ufeff \r\n\t")
    return head.upper().startswith("BEGIN:VCARD")


class VCardRecords(StreamedRecords):
    """Cards of a .vcf file, numbered from 1, streamed."""

    def __iter__(
        self,
    ) -> Iterator[tuple[int, list[tuple[str, str]] | None, str, str | None]]:
        """(card number, pairs or None, raw card, why it cannot be read)."""
        number = 0
        card: list[str] | None = None
        with self.path.open(encoding=self.encoding, newline="") as handle:
            self._handle = handle
            for line in _unfolded(handle):
                upper = line.upper()
                if upper.startswith("BEGIN:VCARD"):
                    if card is not None:
                        number += 1
                        yield _truncated(number, card, "before the next BEGIN:VCARD")
                    card = []
                elif upper.startswith("END:VCARD"):
                    if card is not None:
                        number += 1
                        yield number, card_pairs(card), "\n".join(card), None
                    card = None
                elif card is not None:
                    card.append(line)
            if card is not None:
                number += 1
                yield _truncated(number, card, "before the end of the file")
            self._handle = None


def _truncated(number: int, card: list[str], where: str):
    """A card cut short (a truncated download or copy): rejected, not guessed."""
    reason = f"truncated vCard: no END:VCARD {where}"
    return number, None, "\n".join(card), reason


def _unfolded(handle) -> Iterator[str]:
    """Logical lines: folded continuation lines joined, QP soft breaks joined."""
    pending: str | None = None
    for raw in handle:
        line = raw.rstrip("\r\n").lstrip("\ufeff")
        if pending is not None and line[:1] in (" ", "\t"):
            pending += line[1:]
            continue
        if (
            pending is not None
            and pending.endswith("=")
            and _is_quoted_printable(pending)
        ):
            pending = pending[:-1] + line
            continue
        if pending is not None:
            yield pending
        pending = line
    if pending is not None:
        yield pending


def _is_quoted_printable(line: str) -> bool:
    head = line.split(":", 1)[0].upper()
    return "QUOTED-PRINTABLE" in head


def _params(text: str | None) -> tuple[set[str], dict[str, str]]:
    """(type values, other parameters) from ``;type=CELL;type=pref;X=1``."""
    types: set[str] = set()
    others: dict[str, str] = {}
    for part in (text or "").split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:  # vCard 2.1 bare parameters: TEL;CELL;PREF:
            types.add(key.strip().lower())
            continue
        if key.strip().upper() == "TYPE":
            types.update(v.strip().strip('"').lower() for v in value.split(","))
        else:
            others[key.strip().upper()] = value.strip().strip('"')
    return types, others


def _unescape(value: str) -> str:
    out, index = [], 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            nxt = value[index + 1]
            out.append("\n" if nxt in "nN" else nxt)
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _components(value: str) -> list[str]:
    """Split a structured value (N, ADR, ORG) on unescaped semicolons."""
    parts, current, index = [], [], 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            current.append(value[index : index + 2])
            index += 2
            continue
        if char == ";":
            parts.append(_unescape("".join(current)))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append(_unescape("".join(current)))
    return parts


def _phone_header(types: set[str], label: str | None) -> str:
    words = set(types)
    if label:
        words.add(label.lower())
    if any("fax" in word for word in words):
        return "Phone (fax)"
    if words & {"cell", "mobile", "iphone", "text"}:
        return "Phone (mobile)"
    if "work" in words or "main" in words:
        return "Phone (work)"
    if "home" in words:
        return "Phone (home)"
    return "Phone"


def card_pairs(lines: list[str]) -> list[tuple[str, str]]:
    """The pairs of one card, in the order its properties appear."""
    parsed = []
    labels: dict[str, str] = {}
    company_card = False
    for line in lines:
        match = _LINE.match(line)
        if not match:
            continue
        name = match.group("name").upper()
        group = (match.group("group") or "").lower()
        types, others = _params(match.group("params"))
        value = match.group("value")
        if others.get("ENCODING", "").upper() == "QUOTED-PRINTABLE":
            charset = others.get("CHARSET", "utf-8")
            value = quopri.decodestring(value.encode("latin-1", "replace")).decode(
                charset, "replace"
            )
        if name == "X-ABLABEL" and group:
            label_match = _APPLE_LABEL.match(value.strip())
            labels[group] = label_match.group(1) if label_match else _unescape(value)
        if name == "X-ABSHOWAS" and value.strip().upper() == "COMPANY":
            company_card = True
        parsed.append((name, group, types, others, value))

    pairs: list[tuple[str, str]] = []
    full_name = None
    org = None
    for name, group, types, others, value in parsed:
        if name in _SKIPPED:
            continue
        if name == "FN":
            full_name = _unescape(value).strip()
        elif name == "N":
            parts = _components(value) + [""] * 5
            family, given, additional = parts[0], parts[1], parts[2]
            pairs += [
                ("Last Name", family),
                ("First Name", given),
                ("Middle Name", additional),
            ]
        elif name == "ORG":
            org = _components(value)[0].strip()
            pairs.append(("Company", org))
        elif name == "EMAIL":
            pairs.append(("Email", _unescape(value)))
        elif name == "TEL":
            header = _phone_header(types, labels.get(group))
            pairs.append((header, _unescape(value).removeprefix("tel:")))
        elif name == "BDAY":
            pairs.append(("Birthday", _birthday(value, others)))
        elif name == "NOTE":
            pairs.append(("Notes", _unescape(value)))
        elif name == "CATEGORIES":
            pairs.append(("Categories", _unescape(value)))
        elif name == "ADR":
            parts = [p.strip() for p in _components(value) if p.strip()]
            label = labels.get(group) or ",".join(sorted(types - {"pref"})) or "address"
            pairs.append((f"Address ({label})", ", ".join(parts)))
        elif name == "TITLE":
            pairs.append(("Job Title", _unescape(value)))
        elif name == "URL":
            pairs.append(("Website", _unescape(value)))
        else:
            pairs.append((name.title(), _unescape(value)))

    names_given = any(k in ("First Name", "Last Name") and v.strip() for k, v in pairs)
    if full_name and not company_card and not (full_name == org and not names_given):
        pairs.insert(0, ("Full Name", full_name))
    return pairs


def _birthday(value: str, others: dict[str, str]) -> str:
    text = value.strip()
    omit = others.get("X-APPLE-OMIT-YEAR")
    if omit and text.startswith(omit):
        rest = text[len(omit) :].lstrip("-")
        return "--" + rest[:5] if "-" in rest else "--" + rest[:2] + "-" + rest[2:4]
    if re.match(r"^\d{8}$", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    if re.match(r"^--\d{4}$", text):
        return f"--{text[2:4]}-{text[4:]}"
    return text[:10] if re.match(r"^\d{4}-\d{2}-\d{2}T", text) else text
