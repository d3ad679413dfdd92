"""Compiled rules: one pass over an item's text finds the terms of every rule.

Each field is normalised and turned into a word string (``"\\0japan\\0and\\0eu\\0"``); the
fields are joined with ``"\\0\\x01\\0"`` so that nothing matches across two of them. Every term,
phrase and prefix of every rule becomes one or more Aho-Corasick patterns over that string:

    Japan            "\\0japan\\0"            a whole word
    defen*           "\\0defen"               the start of a word
    "North Korea"    "\\0north\\0korea\\0"     adjacent whole words, any punctuation between
    北朝鮮            "北朝鮮"                  anywhere (a substring script)
    "defen* pact"    "\\0defen", "\\0pact\\0"  pieces chained by word positions

One ``automaton.iter`` per item yields only real hits. Each rule is evaluated only when one of
its trigger patterns is among them (a pattern that must occur for the rule to be true, picked to
be a rare one; rules such as ``NOT x`` that can be true with no hit at all are always
evaluated). Word positions are computed only for NEAR and multi-piece phrases, and the matched
text only for rules that matched.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import ahocorasick

from scraper.errors import RuleError
from scraper.models import FIELDS, Match, Rule
from scraper.rules.query import (
    Alias,
    And,
    Field,
    Near,
    Not,
    Or,
    Phrase,
    Prefix,
    Query,
    Term,
    alias_lookup,
    parse_query,
    scope,
)
from scraper.rules.text import (
    SEP,
    clean,
    fold,
    hyphen_joined,
    is_substring_script,
    strip_markup,
    word_spans,
    word_string,
)

FIELD_BIT = {name: 1 << i for i, name in enumerate(FIELDS)}
DEFAULT_MASK = FIELD_BIT["title"] | FIELD_BIT["summary"] | FIELD_BIT["content"]
TEXT_FIELDS = ("title", "summary", "content", "author")
MAX_ALTERNATIVES = 16
_FIELD_GLUE = " \x01 "  # between two fields' texts
_BLANK_SPECIALS = {0: " ", 1: " "}

# A span of text a piece of a query matched: (segment, first char, last char, snap start,
# snap end). Chars are offsets in the item's word string (inclusive); "snap" means the match
# starts (ends) at a word boundary, as opposed to a substring inside a word.
Span = tuple[int, int, int, bool, bool]


# --- compiling -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Piece:
    pid: int
    lead: int  # 1 when the pattern starts with SEP
    trail: int  # 1 when the pattern ends with SEP
    length: int
    snap_start: bool
    snap_end: bool
    commonness: float  # a guess at how often it occurs: short words and prefixes often


def _commonness(body: str, prefix: bool) -> float:
    """A guess, from the pattern alone, of how often it occurs in text."""
    words = body.count(SEP) + 1
    size = len(body) * (2 if is_substring_script(body) else 1)  # a Han character says more
    guess = 1.0 / (size * size) / (4.0 ** (words - 1))
    return guess * 8 if prefix else guess


Trigger = tuple[frozenset[int], float]  # patterns one of which must occur, and their commonness


Element = tuple[str, str]  # (normalised word, kind): "w" whole word, "p" prefix, "s" substring


class _Compiler:
    def __init__(self, aliases: Mapping[str, tuple[str, ...]]) -> None:
        self.aliases = alias_lookup(aliases)
        self.patterns: dict[str, int] = {}
        self.pieces: dict[str, _Piece] = {}
        self.used_mask = 0
        self._alias_cache: dict[tuple[str, int], _Node] = {}

    def piece(self, pattern: str, snap_start: bool, snap_end: bool) -> _Piece:
        pid = self.patterns.setdefault(pattern, len(self.patterns))
        lead = 1 if pattern.startswith(SEP) else 0
        trail = 1 if pattern.endswith(SEP) and len(pattern) > 1 else 0
        common = _commonness(pattern[lead : len(pattern) - trail], not trail and snap_end)
        piece = _Piece(pid, lead, trail, len(pattern), snap_start, snap_end, common)
        self.pieces.setdefault(pattern, piece)
        return piece

    def sequence(self, elements: list[Element]) -> tuple[_Piece, ...]:
        """Split a word sequence into patterns; a prefix word ends one."""
        pieces: list[_Piece] = []
        buf = ""
        snap_start = True
        for i, (word, kind) in enumerate(elements):
            last = i == len(elements) - 1
            if not buf:
                snap_start = not (i == 0 and kind == "s")
                buf = "" if (i == 0 and kind == "s") else SEP
            buf += word
            if kind == "p":
                pieces.append(self.piece(buf, snap_start, True))
                buf = ""
            elif kind == "s" and last:
                pieces.append(self.piece(buf, snap_start, False))
                buf = ""
            else:
                buf += SEP
        if buf:
            pieces.append(self.piece(buf, snap_start, True))
        return tuple(pieces)

    def leaf(self, chunks: Sequence[str], mask: int) -> _Node:
        """A term, prefix or phrase: ``chunks`` are its whitespace-separated words as written
        (one may end in ``*``)."""
        options: list[list[list[Element]]] = []
        for chunk in chunks:
            prefix = chunk.endswith("*")
            folded = fold(clean(chunk[:-1] if prefix else chunk))
            ws = word_string(folded)
            if not ws:
                continue
            parts = ws.split(SEP)
            forms = [self._elements(parts, prefix)]
            joined = hyphen_joined(folded)
            if joined:
                forms.append(self._elements([joined], prefix))
            options.append(forms)
        alternatives: list[tuple[_Piece, ...]] = []
        for combo in itertools.islice(itertools.product(*options), MAX_ALTERNATIVES):
            for elements in _substring_runs([e for form in combo for e in form]):
                seq = self.sequence(elements)
                if seq not in alternatives:
                    alternatives.append(seq)
        self.used_mask |= mask
        return _Leaf(tuple(alternatives), mask)

    @staticmethod
    def _elements(parts: list[str], prefix: bool) -> list[Element]:
        out: list[Element] = []
        for i, word in enumerate(parts):
            if is_substring_script(word):
                kind = "s"
            elif prefix and i == len(parts) - 1:
                kind = "p"
            else:
                kind = "w"
            out.append((word, kind))
        return out

    def node(self, q: Query, mask: int | None) -> _Node:
        """Compile ``q``; ``mask`` is the field scope from an enclosing field or NEAR."""
        if isinstance(q, Term):
            return self.leaf([q.text], mask or DEFAULT_MASK)
        if isinstance(q, Prefix):
            return self.leaf([q.text + "*"], mask or DEFAULT_MASK)
        if isinstance(q, Phrase):
            return self.leaf(q.words, mask or DEFAULT_MASK)
        if isinstance(q, Alias):
            return self.alias(q, mask or DEFAULT_MASK)
        if isinstance(q, Field):
            return self.node(q.child, FIELD_BIT[q.name])
        if isinstance(q, Not):
            return _Not(self.node(q.child, mask))
        if isinstance(q, And):
            return _And(tuple(self.node(c, mask) for c in q.children))
        if isinstance(q, Or):
            return _any_of([self.node(c, mask) for c in q.children])
        if isinstance(q, Near):
            fields = scope(q)
            near_mask = mask
            if fields is not None:
                near_mask = 0
                for name in fields:
                    near_mask |= FIELD_BIT[name]
            return _Near(self.node(q.left, near_mask), self.node(q.right, near_mask), q.distance)
        raise TypeError(f"not a query node: {q!r}")  # pragma: no cover

    def alias(self, q: Alias, mask: int) -> _Node:
        key = (q.name.casefold(), mask)
        if key not in self._alias_cache:
            members = self.aliases.get(key[0])
            if members is None:
                raise RuleError(f"unknown alias @{q.name}", col=q.col)
            leaves = [self.leaf(member.split(), mask) for member in members]
            self._alias_cache[key] = _any_of(leaves)
        return self._alias_cache[key]


def _any_of(children: list[_Node]) -> _Node:
    """OR of ``children``; terms searched in the same fields merge into one leaf with all
    their alternatives (an alias becomes one leaf), which is quicker to evaluate."""
    merged: dict[int, list[tuple[_Piece, ...]]] = {}
    others: list[_Node] = []
    for child in children:
        if isinstance(child, _Leaf):
            alts = merged.setdefault(child.mask, [])
            alts.extend(a for a in child.alts if a not in alts)
        else:
            others.append(child)
    nodes: list[_Node] = [_Leaf(tuple(alts), mask) for mask, alts in merged.items()] + others
    return nodes[0] if len(nodes) == 1 else _Or(tuple(nodes))


def _substring_runs(elements: list[Element]) -> list[list[Element]]:
    """Two substring-script words next to each other (``"北朝鮮 ミサイル"``) also match written
    together (``北朝鮮ミサイル``), as those scripts are: both spellings, a few at most."""
    joins = [i for i in range(len(elements) - 1) if elements[i][1] == elements[i + 1][1] == "s"]
    if not joins:
        return [elements]
    out = [elements]
    merged: list[Element] = []
    for i, el in enumerate(elements):
        if merged and i - 1 in joins:
            merged[-1] = (merged[-1][0] + el[0], "s")
        else:
            merged.append(el)
    out.append(merged)
    return out


# --- evaluating ------------------------------------------------------------------------------


class _Item:
    """One item's word string and the hits in it."""

    __slots__ = (
        "_segs",
        "_seps",
        "_words",
        "bounds",
        "hits",
        "joined",
        "masks",
        "memo",
        "seg_field",
        "shown",
    )

    def __init__(
        self,
        joined: str,
        bounds: list[int],
        seg_field: list[int],
        shown: str,
        hits: dict[int, list[int]],
        masks: dict[int, int],
    ) -> None:
        self.joined = joined
        self.bounds = bounds  # segment i holds the chars at offsets >= bounds[i]
        self.seg_field = seg_field  # the field bit of each segment
        self.shown = shown  # the fields' texts as a reader sees them, joined by \x01
        self.hits = hits  # pattern id -> offsets of the last char of each occurrence
        self.masks = masks  # pattern id -> the bits of the fields it occurs in
        self._words: _Words | None = None
        self._segs: list[str] | None = None
        self._seps: list[int] | None = None
        self.memo: dict[int, list[Any]] = {}  # spans (or pairs) of a node, by id()

    def seg_text(self, seg: int) -> str:
        if self._segs is None:
            self._segs = self.shown.split("\x01")
        return self._segs[seg]

    @property
    def words(self) -> _Words:
        """Where each word is in the text a reader sees (worked out on first use)."""
        if self._words is None:
            self._words = _Words(self)
        return self._words

    def segment(self, offset: int) -> int:
        return bisect.bisect_right(self.bounds, offset) - 1

    def mask(self, pid: int) -> int:
        """The fields in which pattern ``pid`` occurs."""
        return self.masks.get(pid, 0)

    def word(self, offset: int) -> int:
        """The index of the word at ``offset`` (or of the word right after a SEP there)."""
        seps = self._seps
        if seps is None:  # the offset of each SEP, worked out at C speed
            lengths = itertools.accumulate(map(len, self.joined.split(SEP)))
            seps = self._seps = list(map(operator.add, lengths, itertools.count()))
        return bisect.bisect_right(seps, offset) - 1

    def spans(self, piece: _Piece, mask: int, *, first_only: bool = False) -> list[Span]:
        """Where ``piece`` occurs in the fields of ``mask`` (only the first time in each
        field if ``first_only``)."""
        out: list[Span] = []
        done = -1
        for end in self.hits.get(piece.pid, ()):
            seg = self.segment(end)
            if not self.seg_field[seg] & mask or seg == done:
                continue
            if first_only:
                done = seg
            first = end - piece.length + 1 + piece.lead
            last = end - piece.trail
            out.append((seg, first, last, piece.snap_start, piece.snap_end))
        return out


class _Node:
    __slots__ = ()

    def eval(self, item: _Item) -> bool:
        raise NotImplementedError

    def collect(self, item: _Item, out: list[Span]) -> None:
        """Add the spans that made this node true (called only when it is)."""

    def spans(self, item: _Item) -> list[Span]:  # positional nodes only
        raise NotImplementedError

    def trigger(self, weight: Sequence[float]) -> Trigger | None:
        """Patterns at least one of which occurs whenever this node is true (None: it can be
        true with no pattern at all), chosen to occur as seldom as ``weight`` (how often each
        pattern occurs) says. Only rules whose trigger occurs in an item are evaluated."""
        return None


def _union(triggers: Iterable[Trigger | None]) -> Trigger | None:
    pids: set[int] = set()
    common = 0.0
    for t in triggers:
        if t is None:
            return None
        pids |= t[0]
        common += t[1]
    return frozenset(pids), common


def _rarest(triggers: Iterable[Trigger | None]) -> Trigger | None:
    return min((t for t in triggers if t is not None), key=lambda t: t[1], default=None)


class _Leaf(_Node):
    __slots__ = ("alts", "firsts", "mask", "simple")

    def __init__(self, alts: tuple[tuple[_Piece, ...], ...], mask: int) -> None:
        self.alts = alts
        self.mask = mask
        self.firsts = tuple(a[0].pid for a in alts)  # none of them there: no match, no spans
        # one pattern per alternative: whether it occurs in the fields is all we need
        self.simple = self.firsts if all(len(a) == 1 for a in alts) else None

    def eval(self, item: _Item) -> bool:
        if self.simple is not None:
            hits, mask = item.hits, self.mask
            for pid in self.simple:  # noqa: SIM110 - a loop is faster than any() on a genexpr
                if pid in hits and item.mask(pid) & mask:
                    return True
            return False
        return bool(self.spans(item))

    def spans(self, item: _Item) -> list[Span]:
        masks = item.masks
        for pid in self.firsts:
            if masks.get(pid, 0) & self.mask:
                break
        else:
            return []
        got = item.memo.get(id(self))
        if got is not None:
            return got
        out: list[Span] = []
        item.memo[id(self)] = out
        hits = item.hits
        for alt in self.alts:
            if alt[0].pid not in hits:
                continue
            found = item.spans(alt[0], self.mask)
            for piece in alt[1:]:
                if not found:
                    break
                # the next piece starts with SEP: right after the word the last one ends in
                nxt = {s[1] - 1: s for s in item.spans(piece, self.mask)}
                joined = item.joined
                found = [
                    (a[0], a[1], b[2], a[3], b[4])
                    for a in found
                    if (b := nxt.get(joined.find(SEP, a[2]))) is not None and b[0] == a[0]
                ]
            out.extend(found)
        return out

    def collect(self, item: _Item, out: list[Span]) -> None:
        if self.simple is None:
            out.extend(self.spans(item))
            return
        # for the report, the first occurrence in each field is enough
        masks, mask = item.masks, self.mask
        for alt in self.alts:
            piece = alt[0]
            if masks.get(piece.pid, 0) & mask:
                out.extend(item.spans(piece, mask, first_only=True))

    def trigger(self, weight: Sequence[float]) -> Trigger | None:
        # every piece of an alternative must occur: its rarest one will do
        rarest = [min(alt, key=lambda p: weight[p.pid]).pid for alt in self.alts]
        return frozenset(rarest), sum(weight[pid] for pid in set(rarest))


class _Or(_Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[_Node, ...]) -> None:
        self.children = children

    def eval(self, item: _Item) -> bool:
        for c in self.children:  # noqa: SIM110 - faster than any()
            if c.eval(item):
                return True
        return False

    def spans(self, item: _Item) -> list[Span]:
        return [s for c in self.children for s in c.spans(item)]

    def collect(self, item: _Item, out: list[Span]) -> None:
        for c in self.children:
            # a leaf adds spans exactly when it is true: no need to evaluate it first
            if isinstance(c, _Leaf) or c.eval(item):
                c.collect(item, out)

    def trigger(self, weight: Sequence[float]) -> Trigger | None:
        return _union(c.trigger(weight) for c in self.children)


class _And(_Or):
    __slots__ = ()

    def trigger(self, weight: Sequence[float]) -> Trigger | None:
        return _rarest(c.trigger(weight) for c in self.children)

    def eval(self, item: _Item) -> bool:
        for c in self.children:  # noqa: SIM110 - faster than all()
            if not c.eval(item):
                return False
        return True

    def collect(self, item: _Item, out: list[Span]) -> None:
        for c in self.children:
            c.collect(item, out)


class _Not(_Node):
    __slots__ = ("child",)

    def __init__(self, child: _Node) -> None:
        self.child = child

    def eval(self, item: _Item) -> bool:
        return not self.child.eval(item)


class _Near(_Node):
    __slots__ = ("distance", "left", "right")

    def __init__(self, left: _Node, right: _Node, distance: int) -> None:
        self.left = left
        self.right = right
        self.distance = distance

    def _pairs(self, item: _Item) -> list[tuple[Span, Span]]:
        pairs: list[tuple[Span, Span]] | None = item.memo.get(id(self))
        if pairs is not None:
            return pairs
        pairs = item.memo[id(self)] = []
        lefts = self.left.spans(item)
        rights = self.right.spans(item) if lefts else []
        for a in lefts:
            for b in rights:
                if a[0] != b[0]:
                    continue
                first, second = (a, b) if a[1] <= b[1] else (b, a)
                if first[2] >= second[1]:  # overlapping: one occurrence cannot be both sides
                    continue
                # the words between: one fewer than the SEPs between (none inside one word)
                if item.joined.count(SEP, first[2], second[1]) - 1 <= self.distance:
                    pairs.append((a, b))
        return pairs

    def eval(self, item: _Item) -> bool:
        return bool(self._pairs(item))

    def spans(self, item: _Item) -> list[Span]:
        return [(a[0], min(a[1], b[1]), max(a[2], b[2]), True, True) for a, b in self._pairs(item)]

    def collect(self, item: _Item, out: list[Span]) -> None:
        for a, b in self._pairs(item):
            out.append(a)
            out.append(b)

    def trigger(self, weight: Sequence[float]) -> Trigger | None:
        return _rarest((self.left.trigger(weight), self.right.trigger(weight)))


# --- the matcher -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    node: _Node
    sources: frozenset[str] | None
    test: Callable[[_Item], bool]  # node.eval, flattened into one Python function


def _present(n: _Node) -> str:
    """An expression true when a positional node's first patterns occur in its fields (a
    necessary condition for it to have spans)."""
    if isinstance(n, _Leaf):
        return "(" + " or ".join(f"m({pid}, 0) & {n.mask}" for pid in n.firsts) + ")"
    if isinstance(n, _Near):
        return f"({_present(n.left)} and {_present(n.right)})"
    if isinstance(n, _Or):
        return "(" + " or ".join(map(_present, n.children)) + ")"
    return "True"


def _flatten(node: _Node) -> Callable[[_Item], bool]:
    """``node.eval`` as one generated function: AND, OR, NOT and plain terms become a single
    Python expression (``m`` is ``item.masks.get``) instead of a method call per node, which is most
    of the cost of evaluating a rule. Only integers (pattern ids, field masks) are written into
    the source; other nodes are called through their ``eval``."""
    env: dict[str, Any] = {}

    def expr(n: _Node) -> str:
        if isinstance(n, _Leaf) and n.simple is not None:
            return "(" + " or ".join(f"m({pid}, 0) & {n.mask}" for pid in n.simple) + ")"
        if isinstance(n, _And):
            return "(" + " and ".join(map(expr, n.children)) + ")"
        if isinstance(n, _Or):
            return "(" + " or ".join(map(expr, n.children)) + ")"
        if isinstance(n, _Not):
            return f"(not {expr(n.child)})"
        name = f"n{len(env)}"
        env[name] = n.eval
        if isinstance(n, _Near):  # both sides there at all, before looking at positions
            return f"({_present(n.left)} and {_present(n.right)} and {name}(item))"
        return f"{name}(item)"

    source = f"def test(item):\n    m = item.masks.get\n    return bool({expr(node)})\n"
    exec(compile(source, "<rule>", "exec"), env)  # the source holds our own integers only
    return cast(Callable[[_Item], bool], env["test"])


class _Plan(NamedTuple):
    """Which rules to evaluate for an item: those of the patterns found, and ``always``."""

    pid_rules: list[tuple[int, ...]]
    always: tuple[int, ...]


class Matcher:
    """Rules compiled for matching many items. Build with :meth:`compile`.

    Which pattern of a rule has to occur for the rule to be worth evaluating is chosen by how
    often each pattern occurs: first by a guess from its length, then by counting, in a sample
    of the items matched, so that a rule on "Daar AND minister" waits for "Daar". Only the
    speed depends on it, never the result. Safe to share between threads.
    """

    def __init__(
        self,
        compiled: list[_Compiled],
        automaton: ahocorasick.Automaton | None,
        prior: list[float],
        used_mask: int,
        errors: tuple[RuleError, ...],
    ) -> None:
        self._rules = compiled
        self._automaton = automaton
        self._prior = prior  # guessed share of items holding each pattern
        self._counts = [0] * len(prior)  # items of the sample holding each pattern
        self._sampled = 0
        self._seen = 0
        self._next_plan = 512
        self._used_mask = used_mask
        self.errors = errors  # rules that could not be compiled (and were left out)
        self._plan = self._make_plan(prior)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(c.rule for c in self._rules)

    @classmethod
    def compile(cls, rules: Sequence[Rule], aliases: Mapping[str, tuple[str, ...]]) -> Matcher:
        """Compile enabled ``rules``. A rule whose query does not parse is left out and its
        error kept in :attr:`errors` (``load_rules`` has reported it already)."""
        comp = _Compiler(aliases)
        compiled: list[_Compiled] = []
        errors: list[RuleError] = []
        for rule in rules:
            if not rule.enabled:
                continue
            try:
                node = comp.node(parse_query(rule.query, aliases=aliases), None)
            except RuleError as exc:
                errors.append(RuleError(exc.message, file=rule.path or rule.id, col=exc.col))
                continue
            sources = frozenset(s.casefold() for s in rule.sources) if rule.sources else None
            compiled.append(_Compiled(rule, node, sources, _flatten(node)))
        prior = [0.0] * len(comp.patterns)
        for piece in comp.pieces.values():
            prior[piece.pid] = min(1.0, piece.commonness)
        automaton = None
        if comp.patterns:
            automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
            for pattern, pid in comp.patterns.items():
                automaton.add_word(pattern, pid)
            automaton.make_automaton()
        return cls(compiled, automaton, prior, comp.used_mask, tuple(errors))

    def _make_plan(self, weight: Sequence[float]) -> _Plan:
        pid_rules: list[list[int]] = [[] for _ in weight]
        always: list[int] = []
        for index, c in enumerate(self._rules):
            trigger = c.node.trigger(weight)
            if trigger is None:
                always.append(index)
            else:
                for pid in trigger[0]:
                    pid_rules[pid].append(index)
        return _Plan([tuple(r) for r in pid_rules], tuple(always))

    def _learn(self, hits: Iterable[int]) -> None:
        """Count the patterns of a sample of items; now and then, plan again by the counts."""
        counts = self._counts
        for pid in hits:
            counts[pid] += 1
        self._sampled += 1
        if self._sampled >= self._next_plan:
            self._next_plan *= 4
            n, k = self._sampled, 32.0  # the guess weighs as much as 32 items
            weight = [(c + k * p) / (n + k) for c, p in zip(counts, self._prior, strict=True)]
            self._plan = self._make_plan(weight)

    def match(
        self, fields: Mapping[str, str], *, source: str, source_tags: Sequence[str] = ()
    ) -> list[Match]:
        """The rules that ``fields`` (title, summary, content, author) of an item from
        ``source`` match, in rule order."""
        if not self._rules:
            return []
        used = self._used_mask
        texts: list[tuple[int, str]] = []
        for name in TEXT_FIELDS:
            if used & FIELD_BIT[name]:
                text = fields.get(name)
                if text:
                    texts.append((FIELD_BIT[name], text))
        if used & FIELD_BIT["source"]:
            texts.extend((FIELD_BIT["source"], t) for t in (source, *source_tags) if t)
        if not texts:
            texts.append((FIELD_BIT["title"], ""))
        # all fields in one go, \x01 between them (no pattern holds one, so none matches
        # across two fields)
        for i, (bit, text) in enumerate(texts):
            if "\x00" in text or "\x01" in text:
                texts[i] = (bit, text.translate(_BLANK_SPECIALS))
        shown = strip_markup(_FIELD_GLUE.join([t for _, t in texts]))
        joined = SEP + word_string(fold(shown)) + SEP
        hits: dict[int, list[int]] = {}
        masks: dict[int, int] = {}  # the fields each pattern occurs in
        seg_field = [bit for bit, _ in texts]
        bounds = _bounds(joined, len(texts))
        if self._automaton is not None:
            # hits come in order of their end: follow the field boundaries along
            seg, bit = 0, seg_field[0]
            nxt = bounds[1] if len(bounds) > 1 else len(joined)
            for end, pid in self._automaton.iter(joined):
                while end >= nxt:
                    seg += 1
                    bit = seg_field[seg]
                    nxt = bounds[seg + 1] if seg + 1 < len(bounds) else len(joined)
                got = hits.get(pid)
                if got is None:
                    hits[pid] = [end]
                    masks[pid] = bit
                else:
                    got.append(end)
                    masks[pid] |= bit
        self._seen += 1
        if self._seen % 8 == 1:
            self._learn(hits)
        plan = self._plan
        if not hits and not plan.always:
            return []
        candidates = set(plan.always)
        pid_rules = plan.pid_rules
        for pid in hits:
            candidates.update(pid_rules[pid])
        if not candidates:
            return []
        item = _Item(joined, bounds, seg_field, shown, hits, masks)
        keys: set[str] | None = None
        out: list[Match] = []
        for index in sorted(candidates):
            c = self._rules[index]
            if c.sources is not None:
                if keys is None:
                    keys = {source.casefold(), *(t.casefold() for t in source_tags)}
                if not c.sources & keys:
                    continue
            if c.test(item):
                spans: list[Span] = []
                c.node.collect(item, spans)
                out.append(_make_match(c.rule.id, item, spans))
        return out


def _bounds(joined: str, count: int) -> list[int]:
    bounds = [0]
    at = 0
    for _ in range(count - 1):
        at = joined.index("\x01", at + 1)
        bounds.append(at)
    return bounds


# --- reporting what matched ------------------------------------------------------------------


def _make_match(rule_id: str, item: _Item, spans: list[Span]) -> Match:
    terms: list[str] = []
    done: set[str] = set()
    bits = 0
    words = item.words
    joined = item.joined
    seg_field = item.seg_field
    for span in sorted(set(spans)):
        bits |= seg_field[span[0]]
        # the same words (whole words where snapped), however written, count once
        norm = joined[span[1] : joined.find(SEP, span[2]) if span[4] else span[2] + 1]
        if norm not in done:
            done.add(norm)
            text = words.text(span)
            if text:
                terms.append(text)
    fields = tuple(name for name in FIELDS if bits & FIELD_BIT[name])
    return Match(rule=rule_id, fields=fields, terms=tuple(terms))


class _Words:
    """Finds the text a reader sees for a span of the word string.

    Where case folding kept the segment's length (ASCII, most text), the span's words are
    looked for in the folded segment and quoted from the same offsets; else the segment's words
    are mapped one by one.
    """

    def __init__(self, item: _Item) -> None:
        self.item = item
        self._folded: dict[int, str | None] = {}
        self._texts: dict[Span, str] = {}
        self._segs: dict[int, tuple[int, list[str], list[tuple[int, int]] | None]] = {}

    def text(self, span: Span) -> str:
        got = self._texts.get(span)
        if got is None:
            got = self._texts[span] = self._text(span)
        return got

    def _text(self, span: Span) -> str:
        seg, first, last, snap_start, snap_end = span
        joined = self.item.joined
        folded = self._folded.get(seg, "")
        if folded == "":
            shown = self.item.seg_text(seg)
            f = fold(shown)
            folded = self._folded[seg] = f if len(f) == len(shown) else None
        if folded is not None:
            a = joined.rfind(SEP, 0, first) + 1 if snap_start else first
            b = joined.find(SEP, last) if snap_end else last + 1
            found = _locate(folded, joined[a:b].split(SEP), snap_start, snap_end)
            if found is not None:
                return self.item.seg_text(seg)[found[0] : found[1]]
        return self._mapped(span)

    def _segment(self, seg: int) -> tuple[int, list[str], list[tuple[int, int]] | None]:
        got = self._segs.get(seg)
        if got is None:
            item = self.item
            start = item.bounds[seg] + (2 if seg else 1)  # past "\x01\0" (or the first "\0")
            end = item.joined.find("\x01", start)
            end = len(item.joined) - 1 if end < 0 else end - 1
            norm = item.joined[start:end].split(SEP)
            first = item.word(start)
            shown = item.seg_text(seg)
            spans = word_spans(shown)
            if len(spans) != len(norm):  # NFKC changed where words split: map word by word
                spans = [(a, b) for a, b in spans for _ in word_string(fold(shown[a:b])).split(SEP)]
            got = (first, norm, spans if len(spans) == len(norm) else None)
            self._segs[seg] = got
        return got

    def _mapped(self, span: Span) -> str:
        seg, first, last, snap_start, snap_end = span
        base, norm, spans = self._segment(seg)
        i, j = self.item.word(first) - base, self.item.word(last) - base
        if spans is None or not (0 <= i <= j < len(spans)):
            return self.item.joined[first : last + 1].replace(SEP, " ").strip()
        shown = self.item.seg_text(seg)
        a, b = spans[i][0], spans[j][1]
        if not snap_start:
            inside = self._inside(spans[i], norm[i], first)
            a = a if inside is None else inside
        if not snap_end:
            inside = self._inside(spans[j], norm[j], last + 1, end=True)
            b = b if inside is None else inside
        return shown[a:b]

    def _inside(
        self, span: tuple[int, int], norm: str, offset: int, *, end: bool = False
    ) -> int | None:
        """The offset in ``shown`` of a substring match's edge inside a word, when the word kept
        its length through normalisation (else None: take the whole word)."""
        if span[1] - span[0] != len(norm):
            return None
        word_start = self.item.joined.rfind(SEP, 0, offset if not end else offset - 1) + 1
        return span[0] + (offset - word_start)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or (ch > "\u02ff" and unicodedata.category(ch)[0] == "M")


def _locate(
    text: str, words: list[str], snap_start: bool, snap_end: bool
) -> tuple[int, int] | None:
    """Where ``words`` (normalised) first occur in ``text`` (normalised, but not split into
    words), with only non-word characters between them and, where snapped, at word edges."""
    if not words or not words[0]:
        return None
    head, rest, size = words[0], words[1:], len(text)
    at = text.find(head)
    while at >= 0:
        end = at + len(head)
        ok = not (snap_start and at > 0 and _is_word(text[at - 1]))
        for word in rest if ok else ():
            k = end
            while k < size and not _is_word(text[k]):
                k += 1
            if k == end or not text.startswith(word, k):
                ok = False
                break
            end = k + len(word)
        if ok and not (snap_end and end < size and _is_word(text[end])):
            return at, end
        at = text.find(head, at + 1)
    return None
