"""Benchmark (not a test): where do different reports start to look alike?

    python bench/bench_stories.py [--corpus DIR] [--pairs tests/data/story_pairs.tsv]
                                  [--min 0.5] [--samples 6] [--seed 1]

Measures the near-duplicate rule of scraper/stories.py (token-set Jaccard of normalised titles,
same numbers, at least four tokens, published within NEAR_DUP_HOURS) on real titles:

1. Every item title of the corpus feeds (parsed with scraper.parse.parse_document) is keyed
   with TitleKey, and every pair with a Jaccard similarity of at least --min is found. Blocking
   is prefix filtering (Bayardo et al., "Scaling up all pairs similarity search"): tokens are
   ranked rarest first, and two sets with J >= t must share a token among the first
   |x| - ceil(t|x|) + 1 of each, so only those prefixes are indexed. It is exact, and a few
   thousand titles take well under a second.
2. It prints the distribution of the most similar pairs, split into pairs from one feed (a
   feed carries one item per report, so these are nearly all *different* reports: every one
   the rule joins is a false join) and pairs across feeds, and what the numbers, length and
   time guards leave of each band; then samples of pairs in the bands 0.5-0.6 ... 0.9-1.0.
3. It evaluates the rule on the labelled pairs (title_a, title_b, same) at thresholds
   0.50 ... 0.95: precision and recall of "joined" against "same", and the pairs it gets
   wrong at the current threshold.

The corpus is a robustness corpus (fixtures from many unrelated feeds), so it has few true
syndicated copies; the labelled pairs supply those (and the hard negatives of wire news).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scraper.parse import parse_document  # noqa: E402
from scraper.stories import (  # noqa: E402
    NEAR_DUP_HOURS,
    NEAR_DUP_THRESHOLD,
    TitleKey,
    near_duplicate,
    title_similarity,
)

CORPUS = ROOT.parent / "shared" / "corpus" / "feeds"
PAIRS = ROOT / "tests" / "data" / "story_pairs.tsv"
BANDS = [(0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]
THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]  # 0.50 ... 0.95


@dataclass(frozen=True)
class Title:
    feed: str  # the corpus file it came from
    text: str
    key: TitleKey
    published: datetime | None


@dataclass(frozen=True)
class Pair:
    a: Title
    b: Title
    score: float

    @property
    def same_feed(self) -> bool:
        return self.a.feed == self.b.feed

    def hours(self) -> float | None:
        if self.a.published is None or self.b.published is None:
            return None
        return abs((self.a.published - self.b.published).total_seconds()) / 3600

    def guards(self) -> list[str]:
        """The guards of near_duplicate (other than the threshold) that keep them apart."""
        held = []
        if self.a.key.numbers != self.b.key.numbers:
            held.append("numbers")
        if self.a.key.negations != self.b.key.negations:
            held.append("negation")
        if min(len(self.a.key.words), len(self.b.key.words)) < 4:
            held.append("short")
        hours = self.hours()
        if hours is not None and hours > NEAR_DUP_HOURS:
            held.append("time")
        return held


def load_titles(corpus: Path) -> list[Title]:
    titles: list[Title] = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        kind = "application/json" if path.suffix == ".json" else None
        parsed = parse_document(
            path.read_bytes(), url=f"https://corpus.example/{path.name}", content_type=kind
        )
        feed = str(path.relative_to(corpus))
        seen: set[str] = set()
        for item in parsed.items:
            key = TitleKey.of(item.title or "")
            if not key.norm or item.title in seen:  # an item repeated in its own feed
                continue
            seen.add(item.title)
            titles.append(Title(feed, " ".join(item.title.split()), key, item.published_at))
    return titles


def similar_pairs(titles: Sequence[Title], minimum: float) -> list[Pair]:
    """Every pair with a similarity >= ``minimum``, different normalised titles and four
    words or more each (the rule never joins shorter ones), found exactly."""
    df = Counter(token for t in titles for token in t.key.words)
    rank = {token: (count, token) for token, count in df.items()}
    index: dict[str, list[int]] = defaultdict(list)
    out: list[Pair] = []
    for i, title in enumerate(titles):
        if len(title.key.words) < 4:
            continue
        tokens = sorted(title.key.words, key=rank.__getitem__)
        prefix = tokens[: len(tokens) - math.ceil(minimum * len(tokens)) + 1]
        candidates: set[int] = set()
        for token in prefix:
            candidates.update(index[token])
        for j in candidates:
            other = titles[j]
            if other.key.norm == title.key.norm:
                continue
            score = title_similarity(title.key, other.key)
            if score >= minimum:
                out.append(Pair(other, title, score))
        for token in prefix:
            index[token].append(i)
    out.sort(key=lambda p: -p.score)
    return out


def same_title_pairs(titles: Sequence[Title]) -> list[tuple[Title, Title]]:
    """Pairs of one feed with the same normalised title published within NEAR_DUP_HOURS:
    the store joins such items into one story without looking at their words."""
    groups: dict[tuple[str, str], list[Title]] = defaultdict(list)
    for title in titles:
        groups[title.feed, title.key.norm].append(title)
    out = []
    for group in groups.values():
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if a.published and b.published:
                    hours = abs((a.published - b.published).total_seconds()) / 3600
                    if hours <= NEAR_DUP_HOURS:
                        out.append((a, b))
    return out


def band_of(score: float) -> tuple[float, float] | None:
    for low, high in BANDS:
        if low <= score < high or (high == 1.0 and score == 1.0):
            return low, high
    return None


def print_distribution(pairs: Sequence[Pair], titles: Sequence[Title]) -> None:
    feeds = len({t.feed for t in titles})
    identical = Counter(t.key.norm for t in titles)
    same_norm = sum(n * (n - 1) // 2 for n in identical.values())
    print(f"titles: {len(titles)} from {feeds} feeds; {len(identical)} distinct normalised")
    print(f"pairs with the same normalised title (joined by the store as such): {same_norm}")
    close = same_title_pairs(titles)
    print(f"  of which from one feed and published <= {NEAR_DUP_HOURS:.0f} h apart: {len(close)}")
    for a, b in close[:8]:
        print(f"    {a.feed}: {a.text[:70]!r} ({a.published} / {b.published})")
    short = sum(1 for t in titles if len(t.key.words) < 4)
    print(f"titles with fewer than four words (never near-duplicates): {short}")
    print()
    print("pairs of the other titles by similarity (different normalised titles); 'joined' =")
    print("also passes the numbers, negation and time guards: the rule joins it at that score")
    print(
        f"{'similarity':>10} {'same feed':>10} {'joined':>7} {'cross feed':>11} {'joined':>7}"
        f" {'held: numbers':>14} {'time':>6}"
    )
    steps = [round(1.0 - 0.05 * i, 2) for i in range(11)]
    for high, low in itertools.pairwise(steps):
        inside = [p for p in pairs if low <= p.score < high or (high == 1.0 and p.score == 1.0)]
        same = [p for p in inside if p.same_feed]
        cross = [p for p in inside if not p.same_feed]
        print(
            f"{low:.2f}-{high:.2f} {len(same):>10} {sum(not p.guards() for p in same):>7}"
            f" {len(cross):>11} {sum(not p.guards() for p in cross):>7}"
            f" {sum('numbers' in p.guards() for p in inside):>14}"
            f" {sum('time' in p.guards() for p in inside):>6}"
        )
    print()
    print("same-feed pairs the rule would join, by threshold (each is a false join, unless")
    print("the feed really carries one report twice):")
    for t in THRESHOLDS:
        joined = [p for p in pairs if p.same_feed and p.score >= t and not p.guards()]
        feeds_hit = len({p.a.feed for p in joined})
        print(f"  >= {t:.2f}: {len(joined):4} pairs in {feeds_hit} feeds")
    print()
    print("the most similar pairs the rule would join:")
    for pair in [p for p in pairs if not p.guards()][:12]:
        print(f"  {pair.score:.3f} {pair.a.feed}: {pair.a.text[:60]!r} | {pair.b.text[:60]!r}")


def _diverse(pairs: Sequence[Pair], count: int, rng: random.Random) -> list[Pair]:
    """``count`` random pairs, those the time guard does not hold first, one per feed first
    (a podcast feed of 730 numbered episodes would fill every band otherwise)."""
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    shuffled.sort(key=lambda p: "time" in p.guards())
    chosen: list[Pair] = []
    feeds: set[str] = set()
    for pair in shuffled:
        if len(chosen) < count and pair.a.feed not in feeds:
            chosen.append(pair)
            feeds.add(pair.a.feed)
    for pair in shuffled:
        if len(chosen) < count and pair not in chosen:
            chosen.append(pair)
    return chosen


def print_samples(pairs: Sequence[Pair], count: int, rng: random.Random) -> None:
    for low, high in reversed(BANDS):
        inside = [p for p in pairs if band_of(p.score) == (low, high)]
        print(f"\n--- {low:.1f}-{high:.1f}: {len(inside)} pairs, {min(count, len(inside))} shown")
        for pair in _diverse(inside, count, rng):
            where = "same feed" if pair.same_feed else "cross feed"
            held = ",".join(pair.guards()) or "joined"
            hours = pair.hours()
            apart = f"{hours:.0f}h apart" if hours is not None else "no dates"
            print(f"  {pair.score:.2f} [{where}; {apart}; {held}] ({pair.a.feed})")
            print(f"       a: {pair.a.text[:110]}")
            print(f"       b: {pair.b.text[:110]}")


@dataclass(frozen=True)
class Labelled:
    a: str
    b: str
    same: bool


def load_pairs(path: Path) -> list[Labelled]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t")
        out = []
        for row in rows:
            if not row or row[0] == "title_a":
                continue
            a, b, same = row[:3]
            out.append(Labelled(a, b, same.strip().lower() == "yes"))
        return out


def evaluate(
    pairs: Iterable[Labelled], threshold: float
) -> tuple[float, float, list[Labelled], list[Labelled]]:
    """(precision, recall, false joins, missed joins) of the rule at ``threshold``."""
    tp = 0
    false_joins: list[Labelled] = []
    missed: list[Labelled] = []
    for pair in pairs:
        joined = near_duplicate(TitleKey.of(pair.a), TitleKey.of(pair.b), threshold=threshold)
        if joined and pair.same:
            tp += 1
        elif joined:
            false_joins.append(pair)
        elif pair.same:
            missed.append(pair)
    precision = tp / (tp + len(false_joins)) if tp + len(false_joins) else 1.0
    recall = tp / (tp + len(missed)) if tp + len(missed) else 1.0
    return precision, recall, false_joins, missed


def print_evaluation(labelled: Sequence[Labelled]) -> None:
    positives = sum(p.same for p in labelled)
    print(f"\nlabelled pairs: {len(labelled)} ({positives} same, {len(labelled) - positives} not)")
    print(f"{'threshold':>9} {'precision':>9} {'recall':>7} {'false joins':>11} {'missed':>7}")
    for t in THRESHOLDS:
        precision, recall, false_joins, missed = evaluate(labelled, t)
        mark = "  <- NEAR_DUP_THRESHOLD" if math.isclose(t, NEAR_DUP_THRESHOLD) else ""
        print(
            f"{t:>9.2f} {precision:>9.3f} {recall:>7.3f} {len(false_joins):>11}"
            f" {len(missed):>7}{mark}"
        )
    _, _, false_joins, missed = evaluate(labelled, NEAR_DUP_THRESHOLD)
    for title, wrong in (("false joins", false_joins), ("missed", missed)):
        print(f"\n{title} at {NEAR_DUP_THRESHOLD}:")
        for pair in wrong:
            score = title_similarity(TitleKey.of(pair.a), TitleKey.of(pair.b))
            print(f"  {score:.3f}  {pair.a}  |  {pair.b}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--min", type=float, default=0.5, help="lowest similarity listed")
    parser.add_argument("--samples", type=int, default=6, help="pairs shown per band")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    titles = load_titles(args.corpus)
    parsed = time.perf_counter()
    pairs = similar_pairs(titles, args.min)
    paired = time.perf_counter()
    print(
        f"parsed the corpus in {parsed - started:.2f} s; all pairs >= {args.min} in"
        f" {paired - parsed:.2f} s ({len(pairs)} pairs)"
    )
    print(
        f"rule: Jaccard of the words >= {NEAR_DUP_THRESHOLD}, >= 4 words, same numbers,"
        f" same negation, published <= {NEAR_DUP_HOURS} h apart"
    )
    print()
    print_distribution(pairs, titles)
    print_samples(pairs, args.samples, random.Random(args.seed))
    if args.pairs.exists():
        print_evaluation(load_pairs(args.pairs))


if __name__ == "__main__":
    main()
