"""The query language against text: one table row per line of the SPEC's syntax table, then
Unicode, HTML, the traps, and what a match reports."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scraper.models import Match, Rule
from scraper.rules import Matcher, highlight_spans

ALIASES: Mapping[str, tuple[str, ...]] = {
    "north_korea": ("North Korea", "DPRK", "Pyongyang", "Kim Jong Un", "北朝鮮", "북한"),
    "defence": ("defen*", "military"),
}

Text = str | Mapping[str, str]


def fields_of(text: Text) -> dict[str, str]:
    return {"title": text} if isinstance(text, str) else dict(text)


def match(query: str, text: Text, **kw: object) -> Match | None:
    rule = Rule(id="r", name="r", query=query)
    found = Matcher.compile([rule], ALIASES).match(fields_of(text), source="AFP", **kw)  # type: ignore[arg-type]
    return found[0] if found else None


# (query, texts that must match, texts that must not)
SYNTAX_TABLE: list[tuple[str, list[Text], list[Text]]] = [
    # `Japan`: the whole word
    (
        "Japan",
        ["Japan", "JAPAN", "japan", "Japan's", "Japan–EU", "in Japan."],
        ["Japanese", "Nippon"],
    ),
    # `defen*`: any word starting with "defen"
    (
        "defen*",
        ["defense", "defence", "Defensive", "DEFENDERS"],
        ["offense", "undefended", "de fence"],
    ),
    # `"North Korea"`: adjacent, in order, punctuation between ignored
    (
        '"North Korea"',
        ["North Korea", "North-Korea", "north korea's leader", "NORTH  KOREA", "North – Korea"],
        ["South Korea", "Korea", "North and South Korea", "Korea North", "North Koreans"],
    ),
    # a prefix inside a phrase
    (
        '"defen* pact"',
        ["defense pact", "defence pact signed"],
        ["defense treaty pact", "pact defense"],
    ),
    # `a b`, `a AND b`
    ("Japan EU", ["Japan and EU", "EU meets Japan"], ["Japan only", "EU only"]),
    ("Japan AND EU", ["Japan and EU", "EU meets Japan"], ["Japan only", "EU only"]),
    # `a OR b`
    ("Japan OR EU", ["Japan", "the EU", "Japan and EU"], ["China", "Europe"]),
    # `NOT a`, `-a`, and `-` inside a word is not NOT
    ("Japan NOT baseball", ["Japan wins"], ["Japan baseball", "baseball"]),
    ("Japan -baseball", ["Japan wins"], ["Japan baseball"]),
    ("NOT Japan", ["China", ""], ["Japan"]),
    ("F-35", ["F-35 jets", "the F35", "f 35"], ["F-16", "35 F", "F", "35"]),
    ("-F-35 jets", ["jets"], ["F-35 jets"]),
    # `( … )` and precedence NEAR > NOT > AND > OR
    ("Japan OR EU AND China", ["Japan", "EU and China"], ["EU", "China"]),
    ("(Japan OR EU) AND China", ["EU and China", "Japan, China"], ["Japan", "EU"]),
    ("NOT Japan AND EU", ["EU"], ["Japan and EU", "China"]),
    ("NOT Japan NEAR/1 EU", ["Japan is far away from the EU", "EU"], ["Japan and EU"]),
    ("Japan AND NOT (baseball OR sumo)", ["Japan"], ["Japan sumo", "Japan baseball"]),
    # `a NEAR/n b`: same field, either order, at most n words between; NEAR/0 adjacent
    (
        "Japan NEAR/2 EU",
        ["Japan and the EU", "EU, with Japan", "Japan–EU"],
        ["Japan signed a deal with the EU", {"title": "Japan", "summary": "EU"}],
    ),
    ("Japan NEAR/0 EU", ["Japan EU", "EU Japan", "Japan-EU"], ["Japan and EU"]),
    (
        "defen* NEAR/3 (pact OR partnership)",
        ["defense partnership", "a pact on defence", "defensive security and trade pact"],
        ["defense of the new trade pact", "partnership"],
    ),
    (
        '"North Korea" NEAR/1 missile*',
        ["North Korea fires missiles", "missile from North Korea"],
        ["North Korea, it said, fired missiles"],
    ),
    ("Japan NEAR/1 Japan", ["Japan and Japan"], ["Japan"]),
    # `title:Japan`, `title:( … )`: only that field
    ("title:Japan", [{"title": "Japan", "summary": ""}], [{"title": "Tokyo", "summary": "Japan"}]),
    (
        "title:(Japan OR EU) AND summary:defen*",
        [{"title": "EU", "summary": "defence"}],
        [{"title": "defence", "summary": "EU"}],
    ),
    (
        "author:Smith",
        [{"title": "x", "author": "Jane Smith"}],
        [{"title": "Smith", "summary": "Smith"}],
    ),
    ("source:AFP Japan", ["Japan"], []),
    ("source:Reuters", [], ["Reuters says"]),
    ("content:Japan", [{"title": "x", "content": "<p>Japan</p>"}], ["Japan"]),
    (
        "Japan",
        [{"title": "x", "content": "Japan"}, {"title": "x", "summary": "Japan"}],
        [{"title": "x", "author": "Japan"}],
    ),
    # `@north_korea`: any member
    (
        "@north_korea",
        [
            "DPRK",
            "Pyongyang says",
            "Kim Jong Un",
            "Kim Jong-un",
            "北朝鮮が発射",
            "북한이 발사",
            "North-Korea",
        ],
        ["South Korea", "Korea", "Kim", "북쪽"],
    ),
    (
        "@north_korea NEAR/2 missile*",
        ["Pyongyang fires missiles"],
        ["Pyongyang said on Friday it tested missiles"],
    ),
    ("title:@defence", [{"title": "defence deal"}], [{"title": "x", "summary": "military deal"}]),
]


@pytest.mark.parametrize(("query", "yes", "no"), SYNTAX_TABLE, ids=[r[0] for r in SYNTAX_TABLE])
def test_syntax_table(query: str, yes: list[Text], no: list[Text]) -> None:
    for text in yes:
        assert match(query, text) is not None, f"{query!r} should match {text!r}"
    for text in no:
        assert match(query, text) is None, f"{query!r} should not match {text!r}"


UNICODE: list[tuple[str, list[Text], list[Text]]] = [
    # full-width letters are ASCII after NFKC, both in the text and in the query
    ("Japan", ["ＪＡＰＡＮ", "Ｊａｐａｎ’s"], []),
    ("ｊａｐａｎ", ["Japan"], ["Japanese"]),
    ("ＥＵ", ["EU"], ["neutral"]),
    # Japanese: a substring anywhere, no spaces needed
    ("日本", ["日本と欧州連合が署名", "日本", "在日本"], ["日曜日", "Japan"]),
    ('"北朝鮮 ミサイル"', ["北朝鮮ミサイル発射", "北朝鮮 ミサイル"], ["北朝鮮がミサイル"]),
    ("ミサイル NEAR/0 北朝鮮", ["北朝鮮ミサイル"], ["ミサイル"]),
    # Korean attaches particles: 북한이 contains 북한
    ("북한", ["북한이 미사일을 발사했다", "북한은", "북한"], ["남한", "한국"]),
    (
        "title:북한 AND 미사일",
        [{"title": "북한이", "summary": "미사일을"}],
        [{"title": "미사일", "summary": "북한"}],
    ),
    # accented Latin: case-folded and composed, not stripped of accents
    ("Zürich", ["ZÜRICH", "zürich", "Zu\u0308rich"], ["Zurich"]),
    ("Straße", ["STRASSE", "strasse"], []),
    ("café", ["Café", "CAFÉ"], ["cafe"]),
    ("Genève", ["Genève's banks"], ["Geneva"]),
    # Thai is written without spaces: substring
    ("ญี่ปุ่น", ["ประเทศญี่ปุ่นและสหภาพยุโรป"], ["ประเทศไทย"]),
    # marks stay inside a word (Devanagari)
    ("जापान", ["भारत और जापान ने"], ["जा"]),
]


@pytest.mark.parametrize(("query", "yes", "no"), UNICODE, ids=[r[0] for r in UNICODE])
def test_unicode(query: str, yes: list[Text], no: list[Text]) -> None:
    for text in yes:
        assert match(query, text) is not None, f"{query!r} should match {text!r}"
    for text in no:
        assert match(query, text) is None, f"{query!r} should not match {text!r}"


HTML: list[tuple[str, list[Text], list[Text]]] = [
    ("Japan NEAR/0 EU", [{"title": "x", "summary": "<p>Japan</p><p>EU</p>"}], []),
    ("EU", [{"title": "x", "summary": "Japan &amp; the <b>EU</b>"}], []),
    ("Japan", [{"title": "x", "summary": "&lt;b&gt;Japan&lt;/b&gt;"}], []),
    ("café", [{"title": "x", "summary": "Caf&eacute; talks"}], []),
    ('"Japan s"', [{"title": "x", "summary": "Japan&#8217;s talks"}], []),
    ("EU", [{"title": "x", "summary": "the&nbsp;EU&nbsp;said"}], []),
    ("b OR href OR japan", [], [{"title": "x", "summary": '<a href="japan.html"><b>link</b></a>'}]),
    ("script", [], [{"title": "x", "summary": "<script>var script = 1;</script>ok"}]),
    ("amp", [], [{"title": "x", "summary": "Japan &amp;amp; EU"}]),
]


@pytest.mark.parametrize(("query", "yes", "no"), HTML, ids=[r[0] for r in HTML])
def test_html_and_entities(query: str, yes: list[Text], no: list[Text]) -> None:
    for text in yes:
        assert match(query, text) is not None, f"{query!r} should match {text!r}"
    for text in no:
        assert match(query, text) is None, f"{query!r} should not match {text!r}"


TRAPS: list[tuple[str, list[Text], list[Text]]] = [
    ("EU", ["EU", "the EU's", "EU-Japan", "(EU)"], ["neutral", "EUphoria", "Europe", "European"]),
    ("Japan", ["Japan"], ["Japanese", "Japanese baseball league", "japanology"]),
    ('"North Korea"', ["North Korea"], ["South Korea", "Korea", "North Carolina, South Korea"]),
    ("war and peace", ["War and Peace"], ["war, peace"]),
    ("black or white", ["black or white"], ["black white", "black"]),
    ('"rock and roll"', ["Rock and Roll"], ["rock, roll"]),
    ("F-35", ["F-35A? no: F-35 stays", "F‑35"], ["F-350", "F-3"]),
]


@pytest.mark.parametrize(("query", "yes", "no"), TRAPS, ids=[r[0] for r in TRAPS])
def test_traps(query: str, yes: list[Text], no: list[Text]) -> None:
    for text in yes:
        assert match(query, text) is not None, f"{query!r} should match {text!r}"
    for text in no:
        assert match(query, text) is None, f"{query!r} should not match {text!r}"


def test_phrase_and_near_stay_inside_one_field() -> None:
    item = {"title": "Tokyo talks with North", "summary": "Korea and the EU"}
    assert match('"North Korea"', item) is None
    assert match("North NEAR/5 Korea", item) is None
    assert match("North AND Korea", item) is not None  # AND combines over the whole item


def test_match_reports_fields_and_terms_as_written() -> None:
    item = {
        "title": "JAPAN and EU sign security and defense partnership",
        "summary": "Tokyo (AFP) - Japan and the EU signed a Security and Defence Partnership.",
        "content": "",
        "author": "",
    }
    m = match("Japan AND defen* NEAR/3 partnership", item)
    assert m == Match(
        rule="r", fields=("title", "summary"), terms=("JAPAN", "defense", "partnership", "Defence")
    )
    m = match('"North Korea" OR 北朝鮮', {"title": "North-Korea", "summary": "北朝鮮が"})
    assert m is not None and m.terms == ("North-Korea", "北朝鮮")
    m = match("Japan", {"title": "ＪＡＰＡＮ", "summary": "<b>Japan</b>&amp;"})
    assert m is not None and m.terms == ("ＪＡＰＡＮ",) and m.fields == ("title", "summary")
    m = match("NOT China", "Japan")
    assert m is not None and m.terms == () and m.fields == ()
    m = match("F-35", "two F35s and an F-35")
    assert m is not None and m.terms == ("F-35",)


def test_sources_and_enabled() -> None:
    rules = [
        Rule(id="any", name="any", query="Japan"),
        Rule(id="wire", name="wire", query="Japan", sources=("wire", "Japan Today")),
        Rule(id="off", name="off", query="Japan", enabled=False),
    ]
    m = Matcher.compile(rules, {})
    item = {"title": "Japan"}
    assert [x.rule for x in m.match(item, source="AFP")] == ["any"]
    assert [x.rule for x in m.match(item, source="AFP", source_tags=["Wire"])] == ["any", "wire"]
    assert [x.rule for x in m.match(item, source="Japan Today")] == ["any", "wire"]


def test_rule_that_fails_to_compile_is_left_out() -> None:
    rules = [
        Rule(id="bad", name="b", query="Japan AND", path="rules/bad.yaml"),
        Rule(id="ok", name="o", query="Japan"),
    ]
    m = Matcher.compile(rules, {})
    assert [x.rule for x in m.match({"title": "Japan"}, source="s")] == ["ok"]
    assert m.errors and m.errors[0].file == "rules/bad.yaml" and m.errors[0].col == 10


def test_highlight_spans() -> None:
    text = "TOKYO - Japan's North-Korea envoy met the EU; Japanese fans cheered."
    spans = highlight_spans(text, ["Japan", "North Korea", "EU"])
    assert [text[a:b] for a, b in spans] == ["Japan", "North-Korea", "EU"]
    assert highlight_spans("北朝鮮がミサイル", ["北朝鮮"]) == [(0, 3)]
    assert highlight_spans("ＪＡＰＡＮ <b>Japan</b>", ["japan"]) == [(0, 5), (9, 14)]
    assert highlight_spans("", ["x"]) == [] and highlight_spans("x", []) == []


# --- one automaton for every rule finds what each rule finds alone --------------------------

QUERIES = [
    "Japan",
    "EU OR Tokyo",
    '"North Korea"',
    "defen* NEAR/2 pact",
    "title:Japan -EU",
    "@north_korea",
    "F-35 OR jets",
    "Japan NEAR/0 EU",
    "NOT Japan",
    '"defen* pact" OR 北朝鮮',
    "(Japan OR EU) AND (pact OR partnership)",
    "summary:(north NEAR/1 korea)",
]
VOCAB = [
    "Japan",
    "EU",
    "Tokyo",
    "North",
    "Korea",
    "defense",
    "defence",
    "pact",
    "F-35",
    "jets",
    "北朝鮮",
    "the",
    "and",
    "partnership",
    "Japanese",
    "neutral",
    ",",
    "-",
    "DPRK",
]


@settings(max_examples=60, deadline=None)
@given(
    title=st.lists(st.sampled_from(VOCAB), max_size=8).map(" ".join),
    summary=st.lists(st.sampled_from(VOCAB), max_size=8).map(" ".join),
)
def test_all_rules_together_match_as_each_alone(title: str, summary: str) -> None:
    rules = [Rule(id=str(i), name=q, query=q) for i, q in enumerate(QUERIES)]
    item = {"title": title, "summary": summary}
    together = Matcher.compile(rules, ALIASES).match(item, source="AFP")
    alone = [m for r in rules for m in Matcher.compile([r], ALIASES).match(item, source="AFP")]
    assert together == alone


@settings(max_examples=30, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 1.0), min_size=64, max_size=64),
    title=st.lists(st.sampled_from(VOCAB), max_size=8).map(" ".join),
    summary=st.lists(st.sampled_from(VOCAB), max_size=8).map(" ".join),
)
def test_which_pattern_triggers_a_rule_never_changes_the_result(
    weights: list[float], title: str, summary: str
) -> None:
    rules = [Rule(id=str(i), name=q, query=q) for i, q in enumerate(QUERIES)]
    item = {"title": title, "summary": summary}
    planned = Matcher.compile(rules, ALIASES)
    expected = planned.match(item, source="AFP")
    n = len(planned._prior)
    planned._plan = planned._make_plan([weights[i % len(weights)] for i in range(n)])
    assert planned.match(item, source="AFP") == expected


def test_the_plan_learns_from_items_without_changing_results() -> None:
    rules = [Rule(id=str(i), name=q, query=q) for i, q in enumerate(QUERIES)]
    items = [
        {"title": " ".join(VOCAB[(i * 7 + k) % len(VOCAB)] for k in range(i % 9)), "summary": ""}
        for i in range(4200)
    ]
    learner = Matcher.compile(rules, ALIASES)
    first = [learner.match(it, source="AFP") for it in items]
    assert learner._sampled >= 512  # it has planned again from counts by now
    fresh = Matcher.compile(rules, ALIASES)
    assert [fresh.match(it, source="AFP") for it in items] == first
    assert [learner.match(it, source="AFP") for it in items[:300]] == first[:300]
