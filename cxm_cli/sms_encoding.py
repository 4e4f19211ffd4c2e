"""How many SMS segments a text costs, and in which encoding it travels.

A text made only of characters in the GSM 03.38 default alphabet travels as
GSM-7: 160 septets in one message, 153 per segment once it is split (the
concatenation header takes the rest). Characters of the extension table (``€``,
``[``, ``{`` ...) are sent as an escape plus a septet, so they count twice and
an escape pair never straddles two segments. One character outside both tables
(an emoji, a curly quote) switches the whole text to UCS-2: 70 UTF-16 code
units in one message, 67 per segment, and a surrogate pair never straddles two
segments either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# GSM 03.38 default alphabet, in code-point order 0x00-0x7F. 0x1B is the escape
# to the extension table and is not a character of its own.
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM_BASIC = frozenset(_GSM_BASIC) - {"\x1b"}
# The extension table reachable through the escape (form feed, ^ { } \ [ ~ ] | €).
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

# Limitation: the national language shift tables (Turkish, Spanish, Portuguese,
# Indian scripts) are not modelled; text that only they could carry as GSM-7 is
# counted as UCS-2, which overstates its segments.
GSM_SINGLE_LIMIT = 160
GSM_SEGMENT_SIZE = 153
UCS2_SINGLE_LIMIT = 70
UCS2_SEGMENT_SIZE = 67


@dataclass(frozen=True)
class SegmentInfo:
    """``characters`` counts what the network counts: septets for GSM-7 (an
    extension character is two), UTF-16 code units for UCS-2 (an emoji is
    usually two)."""

    encoding: str  # "GSM-7" or "UCS-2"
    characters: int
    segments: int
    # Characters that forced UCS-2, in order of first appearance.
    non_gsm: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        noun = "segment" if self.segments == 1 else "segments"
        text = f"{self.encoding}, {self.characters} characters, {self.segments} {noun}"
        if self.non_gsm:
            shown = " ".join(repr(c) for c in self.non_gsm[:5])
            text += f" (UCS-2 because of {shown})"
        return text


def is_gsm_text(text: str) -> bool:
    return all(c in GSM_BASIC or c in GSM_EXTENSION for c in text)


def sms_segments(text: str) -> SegmentInfo:
    """Encoding, length and segment count of ``text`` as one SMS."""
    non_gsm = _non_gsm_characters(text)
    if not non_gsm:
        units = [2 if c in GSM_EXTENSION else 1 for c in text]
        return SegmentInfo(
            "GSM-7",
            sum(units),
            _count_segments(units, GSM_SINGLE_LIMIT, GSM_SEGMENT_SIZE),
        )

    units = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return SegmentInfo(
        "UCS-2",
        sum(units),
        _count_segments(units, UCS2_SINGLE_LIMIT, UCS2_SEGMENT_SIZE),
        tuple(non_gsm),
    )


def _non_gsm_characters(text: str) -> list[str]:
    seen: list[str] = []
    for char in text:
        if char not in GSM_BASIC and char not in GSM_EXTENSION and char not in seen:
            seen.append(char)
    return seen


def _count_segments(units: list[int], single_limit: int, segment_size: int) -> int:
    """Pack characters into segments without splitting a multi-unit character."""
    total = sum(units)
    if total == 0:
        return 0
    if total <= single_limit:
        return 1

    segments = 1
    used = 0
    for width in units:
        if used + width > segment_size:
            segments += 1
            used = 0
        used += width
    return segments
