"""Stories: telling when two items are the same report (pure functions, no I/O).

Items join a story when they share the canonical URL, or when their normalised titles are the
same or near-duplicates within the story window. The normalised title folds case, Unicode
width, punctuation, whitespace, a trailing " - Publisher" (or " | Publisher", " — Publisher")
and a leading wire update marker ("(LEAD)", "(2nd LD)", "(URGENT)", "UPDATE 2-", "REFILE-").

Near-duplicate is deliberately strict: merging two different reports would silence an alert,
while splitting one report costs at most one extra alert. Two titles are near-duplicates when

* their word sets (CJK text as character bigrams, numbers left out) have at least four words
  and a Jaccard similarity of at least ``NEAR_DUP_THRESHOLD``, and
* they carry the same numbers, in the same order, as written ("fires 2 missiles" is not
  "fires 3 missiles", "Nix 1.6.1" is not "Nix 1.6", "08-02-2011" is not "02-08-2011"), and
* both or neither are negated ("will resign" is not "will not resign"), and
* the items were published within ``NEAR_DUP_HOURS`` of each other (a wire story is
  syndicated within hours; "North Korea fires missile" on two different days is two stories).

The threshold, 0.85, was measured with bench/bench_stories.py. A one-word substitution in a
title of n words scores (n-1)/(n+1) and a one-word insertion n/(n+1). Substitutions are where
different reports hide ("advisory issued" / "advisory lifted", "Day Four" / "Day Three",
"Yoon declares" / "Yoon lifts martial law": 0.75-0.80), while copies mostly differ by a word
added or dropped. 0.85 keeps a one-word substitution apart up to 12 words and joins a one-word
insertion from 6 words on. On the 69 labelled pairs of tests/data/story_pairs.tsv it makes no
false join (precision 1.0, where 0.80 makes 3 and 0.75 makes 8) and joins 27 of the 36
same-story pairs (recall 0.75; 0.89 at 0.80): the misses are rewordings and synonyms
("earthquake"/"quake", "defence"/"defense"), which cost one extra alert each. Among the 4,109
corpus titles, no two items of one feed published within 18 hours are joined at 0.85 (at
0.80: 7 pairs, at 0.75: 8; such items are different reports).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

NEAR_DUP_THRESHOLD = 0.85
NEAR_DUP_HOURS = 18.0

# " - Publisher" at the end: up to five words, hyphens inside them allowed ("NHK WORLD-JAPAN").
_PUBLISHER_SUFFIX = re.compile(r"\s+[-–—|]\s+((?:(?!\s[-–—|]\s).){2,60})$")
# Wire update markers at the start: Yonhap's "(LEAD)", "(2nd LD)", "(URGENT)"; Reuters'
# "UPDATE 2-", "REFILE-", "CORRECTED-" (capitals only: "Urgent-care" is a word); "BREAKING:".
_WIRE_MARKER = re.compile(
    r"^\s*(?:\((?:lead|urgent|ld|\d+(?:st|nd|rd|th)\s+ld|update|refile|corrected)\)"
    r"|(?-i:UPDATE\s*\d*|REFILE|CORRECTED|URGENT|BREAKING)\s*[-–—]"
    r"|(?:update|urgent|breaking|flash)\s*:)\s*",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
NEGATIONS = frozenset({"not", "no", "never", "t", "cannot", "without", "nor"})  # "won't": t


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


def _title_text(title: str) -> str:
    """The title in NFKC without a trailing publisher or leading wire update markers."""
    text = unicodedata.normalize("NFKC", title or "").strip()
    for _ in range(3):  # "REFILE-UPDATE 2-..."
        marker = _WIRE_MARKER.match(text)
        if marker is None or marker.end() == len(text):
            break
        text = text[marker.end() :]
    suffix = _PUBLISHER_SUFFIX.search(text)
    if suffix and len(suffix.group(1).split()) <= 5 and suffix.start() > 10:
        text = text[: suffix.start()]
    return text


def normalise_title(title: str) -> str:
    """Case, width, punctuation and whitespace folded; a trailing " - Publisher" and leading
    wire update markers removed."""
    return " ".join(_WORD.findall(_title_text(title).casefold()))


def title_numbers(title: str) -> tuple[str, ...]:
    """The numbers of a title as written, in order: "1.6.1" is one number, "1,000" is 1000."""
    return tuple(
        n.replace(",", "") if _THOUSANDS.fullmatch(n) else n
        for n in _NUMBER.findall(_title_text(title))
    )


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
    numbers: tuple[str, ...]
    negations: frozenset[str] = frozenset()
    words: frozenset[str] = frozenset()  # tokens but numbers: what the similarity compares

    @classmethod
    def of(cls, title: str) -> TitleKey:
        norm = normalise_title(title)
        tokens = title_tokens(norm)
        words = frozenset(t for t in tokens if not t.isdigit())
        return cls(norm, tokens, title_numbers(title), tokens & NEGATIONS, words)


def title_similarity(a: TitleKey, b: TitleKey) -> float:
    """Jaccard similarity of two titles' words. Numbers are left out: near_duplicate wants
    them equal anyway, and counted here they would make "MicroCast 06-02-2009" and
    "MicroCast @Activision 06-02-2009" look alike (0.86) when their words are not (0.75)."""
    return similarity(a.words, b.words)


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
    if a.numbers != b.numbers or a.negations != b.negations:
        return False
    if min(len(a.words), len(b.words)) < 4:
        return False
    return title_similarity(a, b) >= threshold
