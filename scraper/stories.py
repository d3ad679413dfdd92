"""Stories: telling when two items are the same report (pure functions, no I/O).

Items join a story when they share the canonical URL, or when their normalised titles are the
same or near-duplicates within the story window. The normalised title folds case, Unicode
width, punctuation, whitespace and a trailing " - Publisher" (or " | Publisher").

Near-duplicate is deliberately strict: merging two different reports would silence an alert,
while splitting one report costs at most one extra alert. Two titles are near-duplicates when

* their word sets (CJK text as character bigrams) have a Jaccard similarity of at least
  ``NEAR_DUP_THRESHOLD``, and
* they carry the same numbers ("fires 2 missiles" is not "fires 3 missiles"), and
* the items were published within ``NEAR_DUP_HOURS`` of each other (a wire story is
  syndicated within hours; "North Korea fires missile" on two different days is two stories).

The threshold was measured on the corpus titles (see bench/bench_stories.py and the README).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

NEAR_DUP_THRESHOLD = 0.75
NEAR_DUP_HOURS = 18.0

_PUBLISHER_SUFFIX = re.compile(r"\s+(?:-|–|—|\|)\s+([^-–—|]{2,60})$")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF  # han
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0x1100 <= code <= 0x11FF
        or 0xF900 <= code <= 0xFAFF
    )


def normalise_title(title: str) -> str:
    """Case, width, punctuation and whitespace folded; a trailing " - Publisher" removed."""
    text = unicodedata.normalize("NFKC", title or "").strip()
    suffix = _PUBLISHER_SUFFIX.search(text)
    if suffix and len(suffix.group(1).split()) <= 5 and suffix.start() > 10:
        text = text[: suffix.start()]
    return " ".join(_WORD.findall(text.casefold()))


def title_tokens(norm_title: str) -> frozenset[str]:
    """Words of a normalised title; runs of CJK characters become overlapping bigrams."""
    tokens: set[str] = set()
    for word in norm_title.split():
        run: list[str] = []
        for ch in word + " ":
            if _is_cjk(ch):
                run.append(ch)
                continue
            if run:
                if len(run) == 1:
                    tokens.add(run[0])
                tokens.update(run[i] + run[i + 1] for i in range(len(run) - 1))
                run = []
        latin = "".join(ch if not _is_cjk(ch) else " " for ch in word).split()
        tokens.update(latin)
    return frozenset(tokens)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True, slots=True)
class TitleKey:
    """What story matching needs of a title, computed once."""

    norm: str
    tokens: frozenset[str]
    numbers: frozenset[str]

    @classmethod
    def of(cls, title: str) -> TitleKey:
        norm = normalise_title(title)
        return cls(norm, title_tokens(norm), frozenset(_NUMBER.findall(norm)))


def near_duplicate(
    a: TitleKey,
    b: TitleKey,
    *,
    published_a: datetime | None = None,
    published_b: datetime | None = None,
    threshold: float = NEAR_DUP_THRESHOLD,
    max_hours: float = NEAR_DUP_HOURS,
) -> bool:
    """True when two titles are the same report (see the module docstring)."""
    if not a.norm or not b.norm:
        return False
    if (
        published_a
        and published_b
        and abs((published_a - published_b).total_seconds()) > max_hours * 3600
    ):
        return False
    if a.norm == b.norm:
        return len(a.tokens) >= 3 or len(a.norm) >= 12
    if a.numbers != b.numbers:
        return False
    if min(len(a.tokens), len(b.tokens)) < 4:
        return False
    return similarity(a.tokens, b.tokens) >= threshold
