"""The query parser: trees, canonical printing, errors with columns, and property tests."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scraper.errors import RuleError
from scraper.rules import parse_query
from scraper.rules.query import (
    MAX_DEPTH,
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
)

TREES: list[tuple[str, Query]] = [
    ("Japan", Term("Japan")),
    ("defen*", Prefix("defen")),
    ('"North Korea"', Phrase(("North", "Korea"))),
    ('"defen* pact"', Phrase(("defen*", "pact"))),
    ("a b", And((Term("a"), Term("b")))),
    ("a AND b", And((Term("a"), Term("b")))),
    ("a OR b", Or((Term("a"), Term("b")))),
    ("NOT a", Not(Term("a"))),
    ("-a", Not(Term("a"))),
    ("F-35", Term("F-35")),
    ("-F-35", Not(Term("F-35"))),
    ("and or", And((Term("and"), Term("or")))),
    ("a OR b c", Or((Term("a"), And((Term("b"), Term("c")))))),
    ("(a OR b) c", And((Or((Term("a"), Term("b"))), Term("c")))),
    ("a AND (b AND c)", And((Term("a"), Term("b"), Term("c")))),
    ("NOT a b", And((Not(Term("a")), Term("b")))),
    ("NOT a NEAR/2 b", Not(Near(Term("a"), Term("b"), 2))),
    ("a NEAR/0 b", Near(Term("a"), Term("b"), 0)),
    ("a NEAR/1 b NEAR/2 c", Near(Near(Term("a"), Term("b"), 1), Term("c"), 2)),
    ("xy* NEAR/3 (p OR q)", Near(Prefix("xy"), Or((Term("p"), Term("q"))), 3)),
    ("title:Japan", Field("title", Term("Japan"))),
    ("Title:(a OR b)", Field("title", Or((Term("a"), Term("b"))))),
    ("title: a", Field("title", Term("a"))),
    ("source:AFP", Field("source", Term("AFP"))),
    ("@north_korea", Alias("north_korea")),
    ("title:@eu NEAR/3 b", Near(Field("title", Alias("eu")), Term("b"), 3)),
    ("10:30", Term("10:30")),
    ("北朝鮮", Term("北朝鮮")),
    ('a"b c"', And((Term("a"), Phrase(("b", "c"))))),
]


@pytest.mark.parametrize(("text", "tree"), TREES, ids=[t for t, _ in TREES])
def test_parse_tree(text: str, tree: Query) -> None:
    parsed = parse_query(text)
    assert parsed == tree
    assert parse_query(str(parsed)) == parsed


CANONICAL = [
    ("a b OR c -d", "a AND b OR c AND NOT d"),
    ("(a OR b) (c OR d)", "(a OR b) AND (c OR d)"),
    ("NOT (a b)", "NOT (a AND b)"),
    ("title:(a)", "title:a"),
    ("title:(a b)", "title:(a AND b)"),
    ("a NEAR/007 (b NEAR/1 c)", "a NEAR/7 (b NEAR/1 c)"),
    ('"  North   Korea "', '"North Korea"'),
    ("--a", "NOT NOT a"),
]


@pytest.mark.parametrize(("text", "printed"), CANONICAL)
def test_canonical_printing(text: str, printed: str) -> None:
    assert str(parse_query(text)) == printed


ERRORS = [
    ("", 1, "empty query"),
    ("Japan AND", 10, "expected a term"),
    ("OR Japan", 1, "found OR"),
    ("a AND OR b", 7, "after AND, found OR"),
    ("(a OR b", 8, "expected ')' to close the '(' at column 1"),
    ("a)", 2, "unexpected ')'"),
    ('"North Korea', 1, "unterminated phrase"),
    ('""', 1, "empty phrase"),
    ("a*b", 2, "'*' may only end a word"),
    ("*", 1, "'*' must follow"),
    ("a*", 1, "too short"),
    ("x - y", 3, "right after '-'"),
    ("NEAR/x", 1, "NEAR/n"),
    ("a NEAR b", 3, "NEAR/n"),
    ("a NEAR/1001 b", 3, "too far"),
    ("foo:bar", 1, "unknown field 'foo:'"),
    ("title:", 7, "after title:"),
    ("title:-a", 7, "after title:"),
    ("a NEAR/3 NOT b", 10, "cannot be a side of NEAR/3"),
    ("(a AND b) NEAR/2 c", 1, "each side of NEAR/2"),
    ("a NEAR/2 (b -c)", 10, "each side of NEAR/2"),
    ("title:a NEAR/2 summary:b", 9, "different fields"),
    ("title:(summary:a)", 8, "can never match"),
    ("@", 2, "alias name"),
    ("@x.y", 3, "alias name"),
    ("...", 1, "no letters"),
]


@pytest.mark.parametrize(("text", "col", "message"), ERRORS, ids=[e[0] or "empty" for e in ERRORS])
def test_errors_have_column_and_expectation(text: str, col: int, message: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_query(text)
    assert info.value.col == col
    assert message in info.value.message
    assert info.value.line is None and info.value.file is None


def test_aliases_are_checked_when_given() -> None:
    aliases = {"north_korea": ("DPRK",)}
    assert parse_query("@North_Korea", aliases=aliases) == Alias("North_Korea")
    with pytest.raises(RuleError) as info:
        parse_query("Japan AND @nk", aliases=aliases)
    assert info.value.col == 11 and "@north_korea" in info.value.message
    assert parse_query("@nk") == Alias("nk")  # no aliases given: not checked


@pytest.mark.parametrize(
    "text",
    [
        "(" * 2000 + "a" + ")" * 2000,
        "NOT " * 2000 + "a",
        "-" * 2000 + "a",
        "a NEAR/1 " * 2000 + "b",
        "title:" * 2000 + "a",
    ],
)
def test_deep_nesting_is_an_error_not_a_crash(text: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_query(text)
    assert f"more than {MAX_DEPTH}" in info.value.message


def test_long_flat_queries_are_fine() -> None:
    q = parse_query(" OR ".join(f"w{i}" for i in range(5000)))
    assert isinstance(q, Or) and len(q.children) == 5000


# --- properties ------------------------------------------------------------------------------

PIECES = st.sampled_from(
    [
        "Japan",
        "eu",
        "F-35",
        "defen*",
        '"North Korea"',
        '"a* b"',
        "@nk",
        "北朝鮮",
        "북한이",
        "AND",
        "OR",
        "NOT",
        "-",
        "NEAR/2",
        "NEAR/0",
        "NEAR/",
        "(",
        ")",
        "title:",
        "author:",
        "foo:",
        '"',
        "*",
        "and",
        "or",
        " ",
        "ＪＡＰＡＮ",
        "x:y",
        "a-",
        "@",
        "é",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=40),
        st.lists(PIECES, max_size=12).map(" ".join),
        st.lists(PIECES, max_size=12).map("".join),
    )
)
def test_random_input_never_crashes_and_round_trips(text: str) -> None:
    try:
        q = parse_query(text)
    except RuleError as exc:
        assert exc.col is not None and 1 <= exc.col <= len(text) + 1
        return
    assert parse_query(str(q)) == q


WORDS = st.sampled_from(["Japan", "eu", "F-35", "north", "北朝鮮", "and", "or", "x1", "Ünï"])
LEAF = st.one_of(
    WORDS.map(Term),
    st.sampled_from(["defen", "pac", "北"]).map(Prefix),
    st.lists(st.one_of(WORDS, st.just("defen*")), min_size=1, max_size=3).map(tuple).map(Phrase),
    st.sampled_from(["nk", "eu_members", "x-y"]).map(Alias),
)


def _positional(children: st.SearchStrategy[Query]) -> st.SearchStrategy[Query]:
    return st.one_of(
        st.tuples(children, children, st.integers(0, 9)).map(lambda t: Near(*t)),
        st.lists(LEAF, min_size=2, max_size=3).map(tuple).map(Or),
    )


POSITIONAL = st.recursive(LEAF, _positional, max_leaves=4)


def _tree(children: st.SearchStrategy[Query]) -> st.SearchStrategy[Query]:
    return st.one_of(
        children.map(Not),
        st.lists(children, min_size=2, max_size=3).map(tuple).map(And),
        st.lists(children, min_size=2, max_size=3).map(tuple).map(Or),
        st.tuples(st.sampled_from(["title", "summary", "content", "author", "source"]), LEAF).map(
            lambda t: Field(*t)
        ),
    )


def _normal(q: Query) -> Query:
    """What the parser builds: nested ANDs (ORs) flattened into one."""
    if isinstance(q, And | Or):
        kids: list[Query] = []
        for c in map(_normal, q.children):
            kids.extend(c.children if type(c) is type(q) else (c,))  # type: ignore[attr-defined]
        return type(q)(tuple(kids))
    if isinstance(q, Not):
        return Not(_normal(q.child))
    if isinstance(q, Near):
        return Near(_normal(q.left), _normal(q.right), q.distance)
    return q


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.one_of(LEAF, POSITIONAL), _tree, max_leaves=8))
def test_printed_trees_parse_back(tree: Query) -> None:
    tree = _normal(tree)
    assert parse_query(str(tree)) == tree
