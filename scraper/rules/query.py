"""The query language: lexer, parser, syntax tree and its canonical printer.

Grammar (precedence NEAR > NOT > AND > OR; AND may be left out)::

    query    := or END
    or       := and ("OR" and)*
    and      := not (["AND"] not)*
    not      := ("NOT" | "-") not | near
    near     := primary ("NEAR/" n primary)*          each side: term, prefix, phrase, alias,
    primary  := TERM | PREFIX | PHRASE | "@"name       field-scoped one of those, or a (... OR ...)
              | FIELD ":" primary | "(" or ")"         of those (a NEAR inside parentheses too)

``str(node)`` prints a canonical query that parses back to an equal tree. Columns in errors are
1-based positions in the query text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from scraper.errors import RuleError
from scraper.models import FIELDS
from scraper.rules.text import is_substring_script, words

MAX_DEPTH = 50  # nested parentheses, NOTs, fields and NEARs
MAX_NEAR = 1000
OPERATORS = ("AND", "OR", "NOT")
_FIELD = re.compile(r"([A-Za-z]+):")
_ALIAS_NAME = re.compile(r"[^\W-][\w-]*")


@dataclass(frozen=True, slots=True)
class Query:
    """A node of a parsed query. ``str(query)`` is its canonical, re-parsable text."""

    def __str__(self) -> str:
        return _format(self, 0)


@dataclass(frozen=True, slots=True)
class Term(Query):
    """A word as written (``Japan``, ``F-35``): its words, adjacent, as whole words."""

    text: str


@dataclass(frozen=True, slots=True)
class Prefix(Query):
    """``defen*``: ``text`` is written without the ``*``."""

    text: str


@dataclass(frozen=True, slots=True)
class Phrase(Query):
    """``"North Korea"``: the words as written between the quotes; a word may end in ``*``."""

    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Alias(Query):
    """``@north_korea``: any member of the alias set."""

    name: str
    col: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Field(Query):
    """``title:Japan``: ``child`` matched only in field ``name``."""

    name: str
    child: Query


@dataclass(frozen=True, slots=True)
class Near(Query):
    """``a NEAR/n b``: both in one field, either order, at most ``distance`` words between."""

    left: Query
    right: Query
    distance: int


@dataclass(frozen=True, slots=True)
class Not(Query):
    child: Query


@dataclass(frozen=True, slots=True)
class And(Query):
    children: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Or(Query):
    children: tuple[Query, ...]


LEAVES = (Term, Prefix, Phrase, Alias)

# --- printing --------------------------------------------------------------------------------

_OR, _AND, _NOT, _NEAR, _PRIMARY = 1, 2, 3, 4, 5


def _format(node: Query, level: int) -> str:
    if isinstance(node, Term):
        return node.text
    if isinstance(node, Prefix):
        return node.text + "*"
    if isinstance(node, Phrase):
        return '"' + " ".join(node.words) + '"'
    if isinstance(node, Alias):
        return "@" + node.name
    if isinstance(node, Field):
        return f"{node.name}:{_format(node.child, _PRIMARY)}"
    if isinstance(node, Near):
        text = f"{_format(node.left, _NEAR)} NEAR/{node.distance} {_format(node.right, _PRIMARY)}"
        own = _NEAR
    elif isinstance(node, Not):
        text, own = "NOT " + _format(node.child, _NOT), _NOT
    elif isinstance(node, And):
        text, own = " AND ".join(_format(c, _NOT) for c in node.children), _AND
    elif isinstance(node, Or):
        text, own = " OR ".join(_format(c, _AND) for c in node.children), _OR
    else:  # pragma: no cover - every node type is handled above
        raise TypeError(f"not a query node: {node!r}")
    return f"({text})" if level > own else text


def walk(node: Query) -> Iterator[Query]:
    """Every node of the tree, parents before children."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, Field | Not):
            stack.append(n.child)
        elif isinstance(n, Near):
            stack.extend((n.right, n.left))
        elif isinstance(n, And | Or):
            stack.extend(reversed(n.children))


# --- lexing ----------------------------------------------------------------------------------

Kind = Literal["TERM", "PREFIX", "PHRASE", "ALIAS", "FIELD", "LP", "RP", "AND", "OR", "NOT", "NEAR"]


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    col: int
    value: str = ""
    words: tuple[str, ...] = ()  # PHRASE
    number: int = 0  # NEAR

    def describe(self) -> str:
        if self.kind == "NOT" and self.value == "-":
            return "'-'"
        if self.kind in ("AND", "OR", "NOT"):
            return self.kind
        if self.kind == "NEAR":
            return f"NEAR/{self.number}"
        return {"LP": "'('", "RP": "')'", "FIELD": f"{self.value}:"}.get(
            self.kind, f"'{self.value}'"
        )


def _err(message: str, col: int) -> RuleError:
    return RuleError(message, col=col)


def check_words(raw: str, col: int, *, prefix: bool) -> None:
    """Raise when a term (or a phrase's word) has nothing to search for or a misplaced ``*``."""
    star = raw.find("*")
    if star >= 0 and (star != len(raw) - 1 or not prefix):
        raise _err("'*' may only end a word (a prefix search such as defen*)", col + star)
    body = raw[:-1] if prefix else raw
    ws = words(body)
    if not ws:
        what = "'*' must follow the start of a word" if body == "" else f"'{raw}' has no letters"
        raise _err(f"{what}; expected a word with letters or digits", col)
    if prefix and len(ws) == 1 and len(ws[0]) < 2 and not is_substring_script(ws[0]):
        raise _err(f"prefix '{raw}' is too short; give at least 2 letters before '*'", col)


def phrase_words(text: str, col: int) -> tuple[str, ...]:
    """Split a phrase's inside (which starts at ``col``) into words, checking each."""
    out: list[str] = []
    for m in re.finditer(r"\S+", text):
        chunk, at = m.group(), col + m.start()
        if "*" in chunk:
            check_words(chunk, at, prefix=True)
        out.append(chunk)
    if not out:
        raise _err("empty phrase; expected words between the quotes", col - 1)
    if not words(" ".join(w.rstrip("*") for w in out)):
        raise _err("the phrase has no letters or digits to search for", col - 1)
    return tuple(out)


def _is_space(ch: str) -> bool:
    return ch.isspace()


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch, col = text[i], i + 1
        if _is_space(ch):
            i += 1
        elif ch == "(":
            tokens.append(Token("LP", col))
            i += 1
        elif ch == ")":
            tokens.append(Token("RP", col))
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise _err('unterminated phrase: expected a closing "', col)
            tokens.append(Token("PHRASE", col, words=phrase_words(text[i + 1 : end], col + 1)))
            i = end + 1
        elif ch == "-":
            if i + 1 >= n or _is_space(text[i + 1]) or text[i + 1] == ")":
                raise _err("expected a term right after '-' (as in -word)", col)
            tokens.append(Token("NOT", col, value="-"))
            i += 1
        else:
            j = i
            while j < n and not _is_space(text[j]) and text[j] not in '()"':
                j += 1
            word = text[i:j]
            if ch == "@":
                name = word[1:]
                m = _ALIAS_NAME.match(name)
                if not m or m.end() != len(name):
                    bad = m.end() if m else 0
                    raise _err(
                        "expected an alias name (letters, digits, _ or -) after '@'",
                        col + 1 + bad,
                    )
                tokens.append(Token("ALIAS", col, value=name))
                i = j
                continue
            if word in OPERATORS:
                tokens.append(Token(word, col))  # type: ignore[arg-type]
                i = j
                continue
            if word == "NEAR" or word.startswith("NEAR/"):
                digits = word[5:]
                if not digits.isascii() or not digits.isdigit():
                    raise _err("expected NEAR/n with a number of words n, as in NEAR/5", col)
                if int(digits) > MAX_NEAR:
                    raise _err(f"NEAR/{digits} is too far; the most is NEAR/{MAX_NEAR}", col)
                tokens.append(Token("NEAR", col, number=int(digits)))
                i = j
                continue
            m = _FIELD.match(word)
            if m:
                name = m.group(1).lower()
                if name not in FIELDS:
                    raise _err(
                        f"unknown field '{m.group(0)}'; expected one of "
                        + ", ".join(f + ":" for f in FIELDS)
                        + ' (put text with a colon in quotes: "a:b")',
                        col,
                    )
                tokens.append(Token("FIELD", col, value=name))
                i += len(m.group(0))
                continue
            if word.endswith("*"):
                check_words(word, col, prefix=True)
                tokens.append(Token("PREFIX", col, value=word[:-1]))
            else:
                check_words(word, col, prefix=False)
                tokens.append(Token("TERM", col, value=word))
            i = j
    return tokens


# --- parsing ---------------------------------------------------------------------------------

_STARTS = frozenset({"TERM", "PREFIX", "PHRASE", "ALIAS", "FIELD", "LP", "NOT"})
_EXPECTED = "a term, a \"phrase\", an @alias, NOT or '('"
_EXPECTED_SIDE = "a term, a \"phrase\", an @alias or '('"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.field: str | None = None  # the field scope we are inside, if any

    @property
    def end_col(self) -> int:
        return len(self.text) + 1

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def enter(self, col: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _err(f"the query nests too deeply (more than {MAX_DEPTH} levels)", col)

    def expected(self, what: str, after: str | None) -> RuleError:
        tok = self.peek()
        found = "the end of the query" if tok is None else tok.describe()
        col = self.end_col if tok is None else tok.col
        where = f" after {after}" if after else ""
        if tok is not None and tok.kind == "RP" and after is None:
            return _err("unexpected ')' with no '(' before it", col)
        return _err(f"expected {what}{where}, found {found}", col)

    def parse(self) -> Query:
        if not self.tokens:
            raise _err("empty query; expected at least one term", 1)
        node = self.parse_or()
        tok = self.peek()
        if tok is not None:
            if tok.kind == "RP":
                raise _err("unexpected ')' with no '(' before it", tok.col)
            raise self.expected("AND, OR or the end of the query", None)  # pragma: no cover
        return node

    def parse_or(self) -> Query:
        children = [self.parse_and(None)]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.take()
            children.append(self.parse_and("OR"))
        return _flat(Or, children)

    def parse_and(self, after: str | None) -> Query:
        children = [self.parse_not(after)]
        while (tok := self.peek()) is not None:
            if tok.kind == "AND":
                self.take()
                children.append(self.parse_not("AND"))
            elif tok.kind in _STARTS:
                children.append(self.parse_not(None))
            else:
                break
        return _flat(And, children)

    def parse_not(self, after: str | None) -> Query:
        tok = self.peek()
        if tok is not None and tok.kind == "NOT":
            self.take()
            self.enter(tok.col)
            child = self.parse_not("NOT" if tok.value != "-" else "'-'")
            self.depth -= 1
            return Not(child)
        return self.parse_near(after)

    def parse_near(self, after: str | None) -> Query:
        start = self.peek()
        node = self.parse_primary(after)
        links = 0
        while (tok := self.peek()) is not None and tok.kind == "NEAR":
            self.take()
            self.enter(tok.col)
            links += 1
            _check_near_side(node, start.col if start else 1, tok)
            right_start = self.peek()
            right = self.parse_primary(tok.describe())
            _check_near_side(right, right_start.col if right_start else 1, tok)
            if _scopes_conflict(node, right):
                raise _err(
                    f"the two sides of {tok.describe()} are limited to different fields; "
                    "a NEAR matches inside one field",
                    tok.col,
                )
            node = Near(node, right, tok.number)
        self.depth -= links
        return node

    def parse_primary(self, after: str | None) -> Query:
        tok = self.peek()
        if tok is not None and tok.kind == "NOT" and after and after.endswith(":"):
            raise _err(
                f"expected {_EXPECTED_SIDE} after {after}, found {tok.describe()} "
                f"(write {after}(NOT word) or NOT {after}word)",
                tok.col,
            )
        if tok is not None and tok.kind == "NOT":
            raise _err(
                f"{tok.describe()} cannot be a side of {after}; put it outside, "
                "as in NOT (a NEAR/3 b)",
                tok.col,
            )
        if tok is None or tok.kind not in _STARTS:
            side = after is not None and (after.startswith("NEAR") or after.endswith(":"))
            raise self.expected(_EXPECTED_SIDE if side else _EXPECTED, after)
        self.take()
        if tok.kind == "TERM":
            return Term(tok.value)
        if tok.kind == "PREFIX":
            return Prefix(tok.value)
        if tok.kind == "PHRASE":
            return Phrase(tok.words)
        if tok.kind == "ALIAS":
            return Alias(tok.value, col=tok.col)
        if tok.kind == "FIELD":
            if self.field is not None and self.field != tok.value:
                raise _err(
                    f"{tok.value}: inside {self.field}:( … ) can never match; "
                    "a term is in one field at a time",
                    tok.col,
                )
            self.enter(tok.col)
            outer, self.field = self.field, tok.value
            child = self.parse_primary(f"{tok.value}:")
            self.field = outer
            self.depth -= 1
            return Field(tok.value, child)
        # "("
        self.enter(tok.col)
        inner = self.parse_or()
        close = self.peek()
        if close is None or close.kind != "RP":
            found = "the end of the query" if close is None else close.describe()
            raise _err(
                f"expected ')' to close the '(' at column {tok.col}, found {found}",
                self.end_col if close is None else close.col,
            )
        self.take()
        self.depth -= 1
        return inner


def _flat(kind: type[And] | type[Or], children: list[Query]) -> Query:
    if len(children) == 1:
        return children[0]
    out: list[Query] = []
    for c in children:
        out.extend(c.children if isinstance(c, kind) else (c,))
    return kind(tuple(out))


def _positional(node: Query) -> bool:
    """Can this be a side of NEAR: something with positions in the text?"""
    if isinstance(node, (*LEAVES, Near)):
        return True
    if isinstance(node, Field):
        return _positional(node.child)
    if isinstance(node, Or):
        return all(_positional(c) for c in node.children)
    return False


def _check_near_side(node: Query, col: int, near: Token) -> None:
    if not _positional(node):
        what = "AND" if isinstance(node, And) else "NOT"
        raise _err(
            f'each side of {near.describe()} must be a term, prefix, "phrase", @alias or '
            f"a (… OR …) of those; this side has {what}",
            col,
        )


def scope(node: Query) -> frozenset[str] | None:
    """The fields a positional node is limited to, or None when it is not limited."""
    if isinstance(node, Field):
        inner = scope(node.child)
        return frozenset({node.name}) if inner is None else inner & {node.name}
    if isinstance(node, Or):
        scopes = [scope(c) for c in node.children]
        if any(s is None for s in scopes):
            return None
        return frozenset().union(*[s for s in scopes if s is not None])
    if isinstance(node, Near):
        left, right = scope(node.left), scope(node.right)
        if left is None:
            return right
        return left if right is None else left & right
    return None


def _scopes_conflict(left: Query, right: Query) -> bool:
    a, b = scope(left), scope(right)
    return a is not None and b is not None and not (a & b)


def alias_lookup(aliases: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Alias names are matched without regard to case."""
    return {name.casefold(): members for name, members in aliases.items()}


def check_aliases(query: Query, aliases: Mapping[str, tuple[str, ...]]) -> None:
    """Raise for the first ``@name`` that ``aliases`` does not define."""
    known = alias_lookup(aliases)
    for node in walk(query):
        if isinstance(node, Alias) and node.name.casefold() not in known:
            names = ", ".join("@" + n for n in sorted(aliases)[:8]) or "none are defined"
            raise _err(f"unknown alias @{node.name}; expected one of {names}", node.col)


def parse_query(text: str, *, aliases: Mapping[str, tuple[str, ...]] | None = None) -> Query:
    """Parse a query. Raises :class:`RuleError` with ``col`` set (1-based) on a syntax error,
    and, when ``aliases`` is given, on an ``@name`` it does not define."""
    query = _Parser(text).parse()
    if aliases is not None:
        check_aliases(query, aliases)
    return query
