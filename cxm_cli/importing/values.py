"""Normalising the values real exports contain: phones, emails, names, dates, money.

Every function here is pure and cheap to call again: phone and email results
are cached because a large export repeats the same values (household phones,
front desks, re-exports), and the importer calls these once per cell.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# Values people and tools type into a field that mean "nothing here".
PLACEHOLDERS = {
    "",
    "-",
    "--",
    "?",
    ".",
    "n/a",
    "na",
    "n.a.",
    "none",
    "null",
    "nil",
    "unknown",
    "undefined",
    "not provided",
    "[not provided]",
    "no email",
    "no phone",
    "tbd",
    "x",
}

PLACEHOLDER_EMAILS = {
    "test@test",
    "test@test.com",
    "asdf@asdf",
    "asdf@asdf.com",
    "noemail@noemail.com",
    "no@email.com",
    "none@none.com",
    "email@email.com",
    "example@example.com",
}

PLACEHOLDER_PHONE_DIGITS = {
    "1234567890",
    "11234567890",
    "0123456789",
    "5555555555",
    "15555555555",
}

COMMON_EMAIL_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "aol.com",
    "live.com",
    "msn.com",
    "me.com",
    "mac.com",
    "comcast.net",
    "att.net",
    "verizon.net",
    "protonmail.com",
    "proton.me",
    "gmx.de",
    "gmx.net",
    "web.de",
    "yahoo.co.uk",
    "hotmail.co.uk",
    "btinternet.com",
    "yandex.ru",
    "mail.ru",
)

_SCIENTIFIC = re.compile(r"^[+]?\d+(?:[.,]\d+)?[eE][+]?\d+$")
_TRAILING_NOTE = re.compile(r"\s*\((?=[^)]*[A-Za-z])[A-Za-z .]+\)\s*$")
_TRUNK_ZERO = re.compile(r"\(\s*0\s*\)")
_DOT_ATOM = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"
)
_MOJIBAKE = re.compile(r"[ÃÂÅÄ][\u0080-\u00bf]|â€|Ã.")


# Control characters (NUL, escapes) and the bidirectional overrides that can
# make a name display as something else ("Trojan Source"); tab and line breaks
# stay, and so do the zero-width joiners some scripts and emoji need.
_INVISIBLE = dict.fromkeys(
    [
        *(code for code in range(0x20) if chr(code) not in "\t\n\r"),
        *range(0x7F, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        0xFEFF,
    ]
)


def clean_cell(value: str | None) -> str:
    """A cell with surrounding space and Excel's ``'`` text guard removed.

    Excel, Square, Shopify and Acuity put ``'`` before numbers (and cxm's own
    export before cells starting ``= + - @``) so a spreadsheet keeps them as
    text; it is never part of the value. Control characters and
    bidirectional overrides are dropped.
    """
    if value is None:
        return ""
    text = value.translate(_INVISIBLE).strip()
    if text.startswith("'") and len(text) > 1:
        rest = text[1:]
        if rest[0] in "=+-@" or _looks_numeric(rest):
            text = rest.strip()
    return text


def _looks_numeric(text: str) -> bool:
    return bool(text) and all(ch.isdigit() or ch in "+-() ./" for ch in text)


def is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDERS


# ---------------------------------------------------------------- phones


@dataclass(frozen=True)
class PhoneResult:
    e164: str | None
    extension: str | None = None
    problem: str | None = None  # why the value is not a usable phone
    note: str | None = None  # a warning about how it was read
    damaged: bool = False  # scientific notation: data lost, never guessed


@functools.lru_cache(maxsize=32_768)
def normalise_phone(raw: str, region: str) -> PhoneResult:
    """E.164 and extension for a phone as an export wrote it, or the problem."""
    text = raw.strip()
    if text.startswith("'"):
        text = text[1:].strip()
    if text[:2].lower() == "p:":
        text = text[2:].strip()
    text = _TRAILING_NOTE.sub("", text)

    if is_placeholder(text):
        return PhoneResult(None, problem="placeholder, not a phone number")
    if _SCIENTIFIC.match(text.replace(" ", "")):
        return PhoneResult(
            None,
            problem=f"{text} is in scientific notation (damaged by a spreadsheet)",
            damaged=True,
        )

    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        text = _TRUNK_ZERO.sub("", text)

    digits = "".join(ch for ch in _without_extension(text) if ch.isdigit())
    if len(set(digits)) <= 1 or digits in PLACEHOLDER_PHONE_DIGITS:
        return PhoneResult(None, problem="placeholder, not a phone number")
    if len(digits) < 8:
        return PhoneResult(None, problem=f"{text} has no area code")

    parsed = _parse(text, region)
    if parsed is not None and phonenumbers.is_valid_number(parsed):
        return PhoneResult(_e164(parsed), parsed.extension or None)

    # A long number with no "+" that is not valid here is usually a foreign
    # number whose "+" was lost (61491570156); never store it as +1...
    if not text.startswith("+") and len(digits) >= 11:
        foreign = _parse("+" + digits, region)
        if foreign is not None and phonenumbers.is_valid_number(foreign):
            region_code = phonenumbers.region_code_for_number(foreign)
            return PhoneResult(
                _e164(foreign),
                parsed.extension if parsed is not None else None,
                note=f"{text} read as an international number ({region_code})",
            )
    return PhoneResult(None, problem=f"{text} is not a valid phone number")


def _without_extension(text: str) -> str:
    return re.split(r"(?i)\s*(?:ext\.?|extension|x|#)\s*\d+\s*$", text)[0]


def _parse(text: str, region: str):
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _e164(parsed) -> str:
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


PHONE_KIND_WORDS = {
    "mobile": "mobile",
    "cell": "mobile",
    "cellular": "mobile",
    "iphone": "mobile",
    "handy": "mobile",
    "car": "mobile",
    "sms": "mobile",
    "text": "mobile",
    "home": "home",
    "private": "home",
    "privat": "home",
    "work": "work",
    "business": "work",
    "office": "work",
    "main": "work",
    "company": "work",
    "geschäftlich": "work",
    "fax": "fax",
    "pager": "other",
    "other": "other",
}


def phone_kind(label: str | None) -> str | None:
    """mobile | home | work | fax | other from a label or column name."""
    if not label:
        return None
    words = re.findall(r"[a-zäöü]+", label.lower())
    if "fax" in words or "faxnummer" in words:
        return "fax"
    for word in words:
        if word in PHONE_KIND_WORDS:
            return PHONE_KIND_WORDS[word]
    if "mobiltelefon" in words:
        return "mobile"
    return None


# ---------------------------------------------------------------- countries

# What people write in a Country column that pycountry's names miss: the
# nations of the UK, short and older names.
COUNTRY_EXTRAS = {
    "uk": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "usa": "US",
    "america": "US",
    "united states of america": "US",
    "korea": "KR",
    "korea south": "KR",
    "republic of korea": "KR",
    "russia": "RU",
    "россия": "RU",
    "czech republic": "CZ",
    "turkey": "TR",
    "holland": "NL",
    "republic of ireland": "IE",
    "eire": "IE",
    "ivory coast": "CI",
    "macedonia": "MK",
    "vatican": "VA",
    "uae": "AE",
    "cape verde": "CV",
    "swaziland": "SZ",
    "burma": "MM",
    "east timor": "TL",
    "palestine": "PS",
    "kosovo": "XK",
}

# Languages whose names for countries are understood besides English, so a
# native name (Deutschland, España, Italia, Österreich) is read too.
# Limitation: a name in another language, or one that means different
# countries in two of these languages, is not understood (the row's phones
# are then read in the workspace's region, with a warning); a US state in a
# Country column ("Georgia") is read as the country of that name.
COUNTRY_LANGUAGES = (
    "de fr es it pt pt_BR nl pl sv da nb_NO nn fi is cs sk hu ro el bg ru uk "
    "hr sl sr@latin et lv lt ga cy ca tr ja ko zh_CN zh_TW he ar"
).split()


def _country_key(text: str) -> str:
    """Case, dots, commas, brackets and a leading "the" do not matter."""
    text = text.casefold().replace("&", " and ")
    key = " ".join(re.sub(r"[.,()]", " ", text).split())
    key = key.removeprefix("the ")
    if len(key.replace(" ", "")) <= 3:
        key = key.replace(" ", "")  # "u k" from "U.K."
    return key


def _accentless(key: str) -> str:
    decomposed = unicodedata.normalize("NFKD", key)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@functools.lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """Country name keys to ISO codes: English, the extras, then translations."""
    import gettext

    import pycountry

    names: dict[str, str] = {}
    english: list[tuple[str, str]] = []
    for country in pycountry.countries:
        for attribute in ("name", "official_name", "common_name"):
            value = getattr(country, attribute, None)
            if value:
                english.append((value, country.alpha_2))

    def add(table: dict[str, str], name: str, code: str) -> None:
        for key in (_country_key(name), _accentless(_country_key(name))):
            table.setdefault(key, code)

    for name, code in english:
        add(names, name, code)
    for name, code in COUNTRY_EXTRAS.items():
        add(names, name, code)

    # A translated name that means two countries in two languages is left out.
    translated: dict[str, str] = {}
    clashes: set[str] = set()
    for language in COUNTRY_LANGUAGES:
        try:
            catalog = gettext.translation(
                "iso3166-1", pycountry.LOCALES_DIR, languages=[language]
            )
        except OSError:
            continue
        for name, code in english:
            local = catalog.gettext(name)
            if local == name:
                continue
            for key in {_country_key(local), _accentless(_country_key(local))}:
                if translated.setdefault(key, code) != code:
                    clashes.add(key)
    for key, code in translated.items():
        if key not in clashes:
            names.setdefault(key, code)
    return names


@functools.lru_cache(maxsize=4096)
def country_code(value: str) -> str | None:
    """The phone region of a Country cell ("U.K.", "Italia", "DEU"), or None
    when the value is not a country this table understands."""
    text = value.strip()
    if not text:
        return None
    key = _country_key(text)
    if len(key) == 2 and key.upper() in phonenumbers.SUPPORTED_REGIONS:
        return key.upper()  # "DE", "U.S."
    code = _country_names().get(key) or _country_names().get(_accentless(key))
    if code is None and len(key) == 3 and key.isalpha():
        import pycountry

        country = pycountry.countries.get(alpha_3=key.upper())
        code = country.alpha_2 if country else None
    if code in phonenumbers.SUPPORTED_REGIONS:
        return code
    return None


# ---------------------------------------------------------------- emails


@dataclass(frozen=True)
class EmailResult:
    email: str | None
    problem: str | None = None
    typo_hint: str | None = None  # "did you mean gmail.com?"


@functools.lru_cache(maxsize=32_768)
def normalise_email(raw: str) -> EmailResult:
    """The lower-cased address, or why the value is not an email."""
    text = raw.strip().strip("<>").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:].strip()
    lowered = text.lower()

    if is_placeholder(lowered) or lowered in PLACEHOLDER_EMAILS:
        return EmailResult(None, problem="placeholder, not an email address")
    if lowered.startswith("/o=") or lowered.startswith("/cn="):
        return EmailResult(None, problem="an Exchange directory name, not an email")
    if "@" not in lowered:
        return EmailResult(None, problem=f"{text} is not an email address")

    local, _, domain = lowered.rpartition("@")
    if _DOT_ATOM.match(local) and len(local) <= 64 and _domain_ok(domain):
        email = lowered
    else:
        try:
            checked = validate_email(text, check_deliverability=False)
        except EmailNotValidError as exc:
            return EmailResult(None, problem=f"{text} is not an email address ({exc})")
        email = checked.normalized.lower()
        domain = email.rpartition("@")[2]
    if len(email) > 254:
        return EmailResult(None, problem="email address too long")
    return EmailResult(email, typo_hint=domain_typo(domain))


@functools.lru_cache(maxsize=8192)
def _domain_ok(domain: str) -> bool:
    """Whether email-validator accepts this domain (checked once per domain)."""
    if not domain.isascii():
        return False
    try:
        validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


@functools.lru_cache(maxsize=8192)
def domain_typo(domain: str) -> str | None:
    """The common domain this one is one keystroke away from, if any."""
    if domain in COMMON_EMAIL_DOMAINS:
        return None
    for common in COMMON_EMAIL_DOMAINS:
        if _one_edit_apart(domain, common):
            return common
    return None


def _one_edit_apart(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    shorter, longer = (a, b) if len(a) < len(b) else (b, a)
    for index in range(len(longer)):
        if longer[:index] + longer[index + 1 :] == shorter:
            return True
    return False


# ---------------------------------------------------------------- names

_HONORIFICS = {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "rev", "sir"}
# Compared without dots and case: "Ph.D." is "phd", "Jr." is "jr".
_SUFFIXES = {
    "jr",
    "jnr",
    "sr",
    "snr",
    "ii",
    "iii",
    "iv",
    "md",
    "phd",
    "dds",
    "dmd",
    "esq",
    "cpa",
}
# Words that start a surname ("van der Berg", "de la Cruz", "St. John").
_PARTICLES = {
    "van",
    "von",
    "der",
    "den",
    "de",
    "del",
    "della",
    "da",
    "das",
    "dos",
    "di",
    "du",
    "le",
    "la",
    "bin",
    "ibn",
    "al",
    "el",
    "st",
    "st.",
    "ste",
    "ste.",
}


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 read as Windows-1252 (``PeÃ±a`` -> ``Peña``) when certain."""
    if not text or not _MOJIBAKE.search(text):
        return text
    for codec in ("cp1252", "latin-1"):
        try:
            repaired = text.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        if repaired != text:
            return repaired
    return text


def fold_name(text: str | None) -> str:
    """Case-, accent- and space-insensitive form used to compare names."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", repair_mojibake(text))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.casefold().split())


def name_quality(text: str | None) -> tuple[int, int, int]:
    """Higher is better among variants of one name.

    Mixed case beats ALL CAPS or all lower; kept accents beat stripped ones;
    mojibake loses to everything.
    """
    if not text:
        return (-1, 0, 0)
    clean = 0 if _MOJIBAKE.search(text) else 1
    letters = [ch for ch in text if ch.isalpha()]
    mixed = int(
        any(ch.isupper() for ch in letters) and any(ch.islower() for ch in letters)
    )
    accents = sum(1 for ch in letters if not ch.isascii())
    return (clean, mixed, accents)


def is_variant_of(old: str | None, new: str | None) -> bool:
    return bool(old) and bool(new) and fold_name(old) == fold_name(new)


def split_full_name(full: str) -> tuple[str, str]:
    """(first, last) from a single name column.

    Understood: ``Last, First [Middle]``; suffixes (``Jr``, ``III``, ``PhD``),
    kept at the end of the last name; honorifics, dropped; and surname
    particles, kept with the last name (``Mary Ann | van der Berg``). A name
    never ends with a comma.
    """
    text = " ".join(full.replace(",", ", ").split())
    parts = [part.strip() for part in text.split(",")]
    parts = [part for part in parts if part]
    if not parts:
        return "", ""

    suffixes: list[str] = []
    while len(parts) > 1 and _all_suffixes(parts[-1]):
        suffixes.insert(0, parts.pop())
    if len(parts) > 1:
        last = parts[0]
        first_words = _without_honorifics(" ".join(parts[1:]).split(" "))
        first = " ".join(first_words)
        if not first:
            return "", _joined(last, suffixes)
        return first, _joined(last, suffixes)

    words = _without_honorifics(parts[0].split(" "))
    if len(words) == 1 and parts[0].split(" ")[0] != words[0]:
        return "", _joined(words[0], suffixes)  # "Dr. Lee": a surname
    while len(words) > 1 and _all_suffixes(words[-1]):
        suffixes.insert(0, words.pop())
    if len(words) == 1:
        return words[0], _joined("", suffixes)
    start = len(words) - 1
    for index in range(1, len(words) - 1):
        if words[index].lower() in _PARTICLES:
            start = index
            break
    return " ".join(words[:start]), _joined(" ".join(words[start:]), suffixes)


def _all_suffixes(text: str) -> bool:
    words = text.split(" ")
    return all(word.lower().replace(".", "") in _SUFFIXES for word in words)


def _without_honorifics(words: list[str]) -> list[str]:
    words = [word for word in words if word]
    while len(words) > 1 and words[0].lower().rstrip(".") in _HONORIFICS:
        words = words[1:]
    return words


def _joined(last: str, suffixes: list[str]) -> str:
    return " ".join(part for part in (last, *suffixes) if part)


def display_name(first: str, last: str, company: str) -> str | None:
    person = " ".join(part for part in (first, last) if part)
    return person or company or None


# ---------------------------------------------------------------- dates

_ISO = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2}|UTC)?$",
    re.IGNORECASE,
)
_YEARLESS = re.compile(r"^--(\d{2})-?(\d{2})$")
_NUMERIC = re.compile(
    r"^(\d{1,4})[/.\-](\d{1,2})(?:[/.\-](\d{2,4}))?"
    r"(?:[ ,T]+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([ap]\.?m\.?)?)?"
    r"(?:\s*(?:GMT|UTC)?\s*([+-]\d{1,2}(?::?\d{2})?))?$",
    re.IGNORECASE,
)
_MONTHS = {
    name: index
    for index, names in enumerate(
        [
            ("jan", "january", "jän", "januar", "janvier", "enero"),
            ("feb", "february", "februar", "février", "febrero"),
            ("mar", "march", "mär", "märz", "mars", "marzo"),
            ("apr", "april", "avril", "abril"),
            ("may", "mai", "mayo"),
            ("jun", "june", "juni", "juin", "junio"),
            ("jul", "july", "juli", "juillet", "julio"),
            ("aug", "august", "août", "agosto"),
            ("sep", "sept", "september", "septembre", "septiembre"),
            ("oct", "october", "okt", "oktober", "octobre", "octubre"),
            ("nov", "november", "novembre", "noviembre"),
            ("dec", "december", "dez", "dezember", "décembre", "diciembre"),
        ],
        start=1,
    )
    for name in names
}
_MONTH_NAME = re.compile(
    r"^(?:(?P<d1>\d{1,2})\.?\s+(?P<m1>[^\W\d_]+)\.?,?\s+(?P<y1>\d{4})"
    r"|(?P<m2>[^\W\d_]+)\.?\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y2>\d{4}))"
    r"(?:,?\s+(?:at\s+)?(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?\s*"
    r"(?P<ap>[ap]\.?m\.?)?)?$",
    re.IGNORECASE,
)
EMPTY_DATES = {"0/0/00", "0/0/0000", "00/00/0000", "0000-00-00", "00.00.0000"}

MONTH_FIRST_REGIONS = {"US", "CA", "PH", "FM", "MH", "PW", "GU", "AS", "PR", "VI"}


@dataclass(frozen=True)
class DateValue:
    """A parsed date: a full date, a year-less birthday, or a date-time."""

    day: date | None = None
    month_day: tuple[int, int] | None = None  # year unknown
    moment: datetime | None = None  # aware when the value had an offset
    problem: str | None = None

    def text(self) -> str | None:
        if self.moment is not None:
            return self.moment.isoformat()
        if self.day is not None:
            return self.day.isoformat()
        if self.month_day is not None:
            return f"--{self.month_day[0]:02d}-{self.month_day[1]:02d}"
        return None


def numeric_date_parts(value: str) -> tuple[int, int] | None:
    """The first two numbers of a ``a/b/yyyy`` date, to vote on day/month order."""
    match = _NUMERIC.match(value.strip())
    if not match or len(match.group(1)) > 2:
        return None
    return int(match.group(1)), int(match.group(2))


class DateOrderVote:
    """Infers a column's day/month order from the values that settle it."""

    def __init__(self) -> None:
        self.day_first = 0  # values like 30/04/2024
        self.month_first = 0  # values like 04/30/2024
        self.ambiguous = 0
        self.example: str | None = None

    def feed(self, value: str) -> None:
        parts = numeric_date_parts(value)
        if parts is None:
            return
        first, second = parts
        if first > 12 >= second:
            self.day_first += 1
        elif second > 12 >= first:
            self.month_first += 1
        elif first != second:
            self.ambiguous += 1
            self.example = self.example or value.strip()

    def decide(self, region: str) -> tuple[str, str | None]:
        """("MDY" | "DMY", the assumption to warn about or None)."""
        if self.day_first and not self.month_first:
            return "DMY", None
        if self.month_first and not self.day_first:
            return "MDY", None
        if self.day_first or self.month_first:
            order = "DMY" if self.day_first > self.month_first else "MDY"
            return order, "the column mixes day-first and month-first dates"
        order = "MDY" if region in MONTH_FIRST_REGIONS else "DMY"
        if self.ambiguous:
            reading = "month/day" if order == "MDY" else "day/month"
            return order, (
                f"dates such as {self.example} were read as {reading} "
                f"(the {region} convention); nothing in the column settles it"
            )
        return order, None


def parse_date(value: str, *, order: str = "MDY", zone: str | None = None) -> DateValue:
    """Read one date or date-time cell; ``order`` settles ``a/b/y`` values.

    A value that contradicts ``order`` or names an impossible day is returned
    with a ``problem``, never rolled over into some other date.
    """
    text = " ".join(value.strip().split())
    if not text or text in EMPTY_DATES:
        return DateValue()

    match = _YEARLESS.match(text)
    if match:
        return _month_day(int(match.group(1)), int(match.group(2)), text)

    match = _ISO.match(text)
    if match:
        year, month, day = (int(match.group(i)) for i in (1, 2, 3))
        clock_parts = match.group(4), match.group(5), match.group(6)
        return _build(text, year, month, day, clock_parts, None, match.group(7), zone)

    match = _NUMERIC.match(text)
    if match:
        return _numeric(text, match, order, zone)

    match = _MONTH_NAME.match(text)
    if match:
        month_word = (match.group("m1") or match.group("m2")).lower().rstrip(".")
        month = _MONTHS.get(month_word)
        if month is None:
            return DateValue(problem=f"{text} is not a date")
        day = int(match.group("d1") or match.group("d2"))
        year = int(match.group("y1") or match.group("y2"))
        clock_parts = match.group("h"), match.group("mi"), match.group("s")
        return _build(
            text, year, month, day, clock_parts, match.group("ap"), None, zone
        )

    return DateValue(problem=f"{text} is not a date")


def _numeric(text: str, match, order: str, zone: str | None) -> DateValue:
    first, second, third = match.group(1), match.group(2), match.group(3)
    clock_parts = match.group(4), match.group(5), match.group(6)
    meridiem, offset = match.group(7), match.group(8)

    if len(first) == 4:  # 2024/03/05 is always year-month-day
        year, month, day = int(first), int(second), int(third or 0)
        if third is None:
            return DateValue(problem=f"{text} is not a date")
    elif third is None:  # Mailchimp birthdays: 04/17 with no year
        a, b = int(first), int(second)
        month, day = (b, a) if order == "DMY" else (a, b)
        return _month_day(month, day, text)
    else:
        a, b = int(first), int(second)
        year = int(third)
        if len(third) == 2:
            year += 2000 if year < 70 else 1900
        month, day = (b, a) if order == "DMY" else (a, b)
        if month > 12 and day <= 12:
            expected = "day/month" if order == "DMY" else "month/day"
            return DateValue(problem=f"{text} does not fit the {expected} order")

    return _build(text, year, month, day, clock_parts, meridiem, offset, zone)


def _month_day(month: int, day: int, text: str) -> DateValue:
    try:
        date(2000, month, day)  # a leap year, so 29 February is possible
    except ValueError:
        return DateValue(problem=f"{text} is not a real day of the year")
    return DateValue(month_day=(month, day))


def _build(text, year, month, day, clock_parts, meridiem, offset, zone) -> DateValue:
    try:
        the_day = date(year, month, day)
    except ValueError:
        return DateValue(problem=f"{text} is not a real date")
    hour, minute, second = clock_parts
    if hour is None:
        return DateValue(day=the_day)

    hour = int(hour)
    if meridiem:
        pm = meridiem.lower().startswith("p")
        if hour > 12:
            return DateValue(problem=f"{text} is not a real time")
        hour = (hour % 12) + (12 if pm else 0)
    try:
        moment_time = time(hour, int(minute), int(second or 0))
    except ValueError:
        return DateValue(problem=f"{text} is not a real time")
    moment = datetime.combine(the_day, moment_time)
    tzinfo = _offset_zone(offset) if offset else None
    if tzinfo is None and zone:
        tzinfo = ZoneInfo(zone)
    if tzinfo is not None:
        moment = moment.replace(tzinfo=tzinfo)
    return DateValue(day=the_day, moment=moment)


def _offset_zone(offset: str):
    from datetime import UTC, timedelta, timezone

    text = offset.upper()
    if text in ("Z", "UTC"):
        return UTC
    sign = -1 if text.startswith("-") else 1
    digits = text[1:].replace(":", "")
    hours = int(digits[:2]) if len(digits) > 2 else int(digits)
    minutes = int(digits[2:]) if len(digits) > 2 else 0
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


# ---------------------------------------------------------------- money & flags

_MONEY_CHARS = re.compile(r"[^\d,.\-]")


def parse_money(value: str) -> float | None:
    """``$1,204.50`` or ``1.204,50 €`` as 1204.5; None when it is not money."""
    text = _MONEY_CHARS.sub("", value.strip().replace("\u00a0", ""))
    if not text or not any(ch.isdigit() for ch in text):
        return None
    negative = text.startswith("-") or value.strip().startswith("(")
    text = text.replace("-", "")
    if "," in text and "." in text:
        decimal = "," if text.rfind(",") > text.rfind(".") else "."
    elif text.count(",") == 1 and len(text.rpartition(",")[2]) in (1, 2):
        decimal = ","
    elif text.count(".") == 1:
        decimal = "."
    else:
        decimal = ""
    thousands = {",", "."} - {decimal}
    for mark in thousands:
        text = text.replace(mark, "")
    if decimal == ",":
        text = text.replace(",", ".")
    try:
        amount = float(text)
    except ValueError:
        return None
    return -amount if negative else amount


TRUE_WORDS = {"true", "yes", "y", "1", "x", "checked", "on", "ja", "oui", "si", "sí"}
FALSE_WORDS = {"false", "no", "n", "0", "", "off", "nein", "non"}


def truthy(value: str) -> bool | None:
    """True / False for yes-no cells; None when the cell says neither."""
    text = value.strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    return None


# Words an opt-out column ("SMS Opt Out", "Do Not Email") says yes or no with.
# Compared after lower-casing and turning "-" and "_" into spaces.
OPT_OUT_WORDS = TRUE_WORDS | {
    "opted out",
    "opt out",
    "optout",
    "optedout",
    "unsubscribed",
    "unsubscribe",
    "stop",
    "stopped",
    "do not contact",
    "dnc",
}
NOT_OPTED_OUT_WORDS = FALSE_WORDS | {
    "subscribed",
    "subscribe",
    "opted in",
    "opt in",
    "optin",
    "optedin",
    "not opted out",
    "not unsubscribed",
}


def opt_out_flag(value: str) -> bool | None:
    """True / False for an opt-out column's cell; None when it says neither
    (a date, or a word this list does not know)."""
    return _word_flag(value, OPT_OUT_WORDS, NOT_OPTED_OUT_WORDS)


def _word_flag(value: str, yes: set[str], no: set[str]) -> bool | None:
    """True when the cell's words are one of ``yes``, False for ``no``, else
    None; case, hyphens, underscores and spacing do not matter."""
    text = " ".join(value.strip().lower().replace("-", " ").replace("_", " ").split())
    if text in yes:
        return True
    if text in no:
        return False
    return None


# Words a consent column ("SMS Consent", "Accepts Marketing") says yes or no
# with; "no" there means the person declined, the safe reading an opt-out.
CONSENT_GIVEN_WORDS = TRUE_WORDS | {
    "subscribed",
    "subscribe",
    "opted in",
    "opt in",
    "optin",
    "optedin",
    "agreed",
    "accepted",
    "granted",
    "given",
    "consented",
}
CONSENT_REFUSED_WORDS = (FALSE_WORDS - {""}) | {
    "declined",
    "not subscribed",
    "unsubscribed",
    "unsubscribe",
    "opted out",
    "opt out",
    "optout",
    "optedout",
    "refused",
    "denied",
    "revoked",
    "withdrawn",
    "never subscribed",
    "stop",
    "stopped",
}


def consent_flag(value: str) -> bool | None:
    """True / False for a consent column's cell; None when it says neither."""
    return _word_flag(value, CONSENT_GIVEN_WORDS, CONSENT_REFUSED_WORDS)
