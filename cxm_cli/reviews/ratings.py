"""Reading a text message as a 1-to-5 rating.

People answer "reply 1 to 5" in many ways: ``5``, ``5!``, ``4/5``, ``five``,
``4 stars``, ``★★★★``, ``⭐⭐⭐⭐⭐``, ``5️⃣``, ``👍``. A longer message counts only
when it states the score plainly ("4 out of 5", "3 stars"); a sentence that
merely contains a number ("no one called me back at 5") is not a rating.
"""

from __future__ import annotations

import math
import re
import unicodedata

# Limitation: number words are English only ("cinco" is not read as a five).
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
FILLED_STARS = "\u2605\u2b50\U0001f31f"  # ★ ⭐ 🌟
EMPTY_STARS = "\u2606"  # ☆
THUMBS = {"\U0001f44d": 5, "\U0001f44e": 1}  # 👍 👎
KEYCAP = "\u20e3"  # the combining mark of 1️⃣ ... 5️⃣
# A bare rating may come wrapped in a few friendly words.
SHORT_REPLY_WORDS = 6

_SCALED = re.compile(
    r"(?<![\d.])(\d+(?:[.,]\d+)?)\s*(?:/|out\s+of|of)\s*(5|10)(?![\d.])"
)
_WITH_STARS = re.compile(
    r"(?<![\d.])(\d(?:[.,]\d+)?|one|two|three|four|five)\s*(?:-\s*)?stars?\b"
)
_NUMBER = re.compile(r"(?<![\d.,])(\d+(?:[.,]\d+)?)(?![\d.,])")
_WORD = re.compile(r"\b(one|two|three|four|five)\b")


def parse_rating(text: str | None) -> int | None:
    """The 1-5 rating a reply states, or None when it states none or several."""
    if not text:
        return None
    text = unicodedata.normalize("NFKC", text).strip().lower()
    text = text.replace("\ufe0f", "")  # emoji presentation selector
    if not text:
        return None

    for reader in (_from_stars, _from_keycap, _from_scale, _from_star_words):
        found = reader(text)
        if found is not None:
            return found if 1 <= found <= 5 else None

    if len(re.findall(r"[\w']+", text)) > SHORT_REPLY_WORDS:
        return None
    return _from_short_reply(text)


def _from_stars(text: str) -> int | None:
    filled = sum(text.count(star) for star in FILLED_STARS)
    if filled == 0:
        return None
    empty = text.count(EMPTY_STARS)
    if empty and filled + empty != 5:
        return None
    if filled == 1 and not empty:
        # "5 ⭐" is a five with a star for decoration, not a one.
        rest = "".join(ch for ch in text if ch not in FILLED_STARS)
        stated = _from_short_reply(rest)
        if stated is not None:
            return stated
    return filled


def _from_keycap(text: str) -> int | None:
    digits = set(re.findall(r"(\d)" + KEYCAP, text))
    if len(digits) == 1:
        return int(digits.pop())
    return None


def _from_scale(text: str) -> int | None:
    values = {
        _scaled(match.group(1), int(match.group(2))) for match in _SCALED.finditer(text)
    }
    return values.pop() if len(values) == 1 else None


def _from_star_words(text: str) -> int | None:
    values = {_as_number(match.group(1)) for match in _WITH_STARS.finditer(text)}
    return values.pop() if len(values) == 1 else None


def _from_short_reply(text: str) -> int | None:
    values: set[int] = set()
    for match in _NUMBER.finditer(text):
        values.add(_as_number(match.group(1)))
    for match in _WORD.finditer(text):
        values.add(NUMBER_WORDS[match.group(1)])
    thumbs = {score for emoji, score in THUMBS.items() if emoji in text}
    values |= thumbs
    if len(values) != 1:
        return None
    value = values.pop()
    return value if 1 <= value <= 5 else None


def _as_number(token: str) -> int:
    if token in NUMBER_WORDS:
        return NUMBER_WORDS[token]
    return _round_half_up(float(token.replace(",", ".")))


def _scaled(token: str, scale: int) -> int:
    value = float(token.replace(",", "."))
    if value > scale:
        return 0  # "7/5" is no score at all
    return _round_half_up(value * 5 / scale)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))
