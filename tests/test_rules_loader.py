"""Rule files and the aliases file: validation with file:line:col, isolation of broken files,
and the seed rules that ship in rules/."""

from __future__ import annotations

from pathlib import Path

import pytest

from scraper.models import Rule
from scraper.rules import Matcher, RuleSet, load_rules, parse_aliases, parse_rule

ROOT = Path(__file__).resolve().parent.parent


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for name, body in files.items():
        path = folder / name
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body, encoding="utf-8")
    return folder


def errors_of(text: str, aliases: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    rule, errors = parse_rule(text, rule_id="r", path="r.yaml", aliases=aliases or {})
    assert (rule is None) == bool(errors)
    return [str(e) for e in errors]


def test_full_rule() -> None:
    text = """\
# rules/japan-eu-defense.yaml
name: Japan–EU defense partnership
query: (Japan OR Tokyo) AND (EU OR "European Union") AND defen* NEAR/3 (pact OR partnership)
notify: [email, telegram]
sources: [japan, wire]
digest: "0 8 * * *"
priority: high
enabled: true
"""
    rule, errors = parse_rule(text, rule_id="japan-eu-defense", path="x.yaml", aliases={})
    assert errors == []
    assert rule == Rule(
        id="japan-eu-defense",
        name="Japan–EU defense partnership",
        query=(
            '(Japan OR Tokyo) AND (EU OR "European Union") AND defen* NEAR/3 (pact OR partnership)'
        ),
        notify=("email", "telegram"),
        sources=("japan", "wire"),
        digest="0 8 * * *",
        priority="high",
        enabled=True,
        path="x.yaml",
    )


def test_defaults() -> None:
    rule, _ = parse_rule("query: Japan\n", rule_id="japan", path="p", aliases={})
    assert rule is not None
    assert (rule.name, rule.notify, rule.sources, rule.digest, rule.priority, rule.enabled) == (
        "japan",
        None,
        None,
        None,
        "normal",
        True,
    )
    rule, _ = parse_rule("query: Japan\nnotify: []\n", rule_id="j", path="p", aliases={})
    assert rule is not None and rule.notify == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a query error points into the file: exact for a plain scalar on one line
        ("query: Japan AND\n", ["r.yaml:1:17: query: expected a term"]),
        ("name: x\nquery: 'Japan AND (EU'\n", ["r.yaml:2:22: query: expected ')' to close"]),
        ('query: "a*b"\n', ["r.yaml:1:10: query: '*' may only end a word"]),
        ("query: >-\n  Japan AND\n  foo:bar\n", ["r.yaml:3:3: query: unknown field 'foo:'"]),
        # unknown keys, wrong types, bad values: every error, in order
        (
            "query: Japan\nqurey: x\nnotify: email\nsources: [a, 1]\npriority: urgent\n"
            "enabled: 'yes'\ndigest: 0 25 * * *\nname: [x]\n",
            [
                "r.yaml:2:1: unknown key 'qurey'; did you mean 'query'?",
                "r.yaml:3:9: notify: expected a list",
                "r.yaml:4:14: sources: expected text, found a number",
                "r.yaml:5:11: priority: expected low, normal or high, found 'urgent'",
                "r.yaml:6:10: enabled: expected true or false",
                "r.yaml:7:11: digest: 25 is out of range for the hour field",
                "r.yaml:8:7: name: expected text, found a list",
            ],
        ),
        ("name: x\n", ["r.yaml:1:1: missing query"]),
        ("", ["r.yaml:1:1: the rule file is empty"]),
        ("- query: x\n", ["r.yaml:1:1: expected rule settings"]),
        ("query: a\nquery: b\n", ["r.yaml:2:1: 'query' is set twice (first on line 1)"]),
        ("query: ''\n", ["r.yaml:1:8: query: cannot be empty"]),
        ("query: Japan\nsources: []\n", ["r.yaml:2:10: sources: an empty list"]),
        ("query: Japan\ndigest: 0 8 * *\n", ["r.yaml:2:9: digest: expected 5 fields"]),
        ("query: Japan\ndigest: '0 8 * * 8'\n", ["r.yaml:2:18: digest: 8 is out of range"]),
        # YAML mistakes, with a hint
        ("query: @eu AND x\n", ["r.yaml:1:8: invalid YAML: found character '@'"]),
        ('query: "North Korea" AND x\n', ["r.yaml:1:22: invalid YAML: expected <block end>"]),
        ("query: title: Japan\n", ["r.yaml:1:13: invalid YAML: mapping values are not allowed"]),
        ("query: [unclosed\n", ["r.yaml:2:1: invalid YAML"]),
        # aliases
        ("query: 'Japan OR @nk'\n", ["r.yaml:1:18: query: unknown alias @nk; expected one of @eu"]),
    ],
)
def test_rule_errors(text: str, expected: list[str]) -> None:
    got = errors_of(text, {"eu": ("EU",)})
    assert len(got) == len(expected), got
    for line, want in zip(got, expected, strict=True):
        assert line.startswith(want), (line, want)


def test_aliases_file() -> None:
    text = """\
north_korea: ["North Korea", DPRK, 北朝鮮, 북한]
eu:
  - EU
  - European Union
bad: DPRK
mixed: [ok, '', "@eu", 'de*f', 3]
eu: [again]
"""
    aliases, broken, errors = parse_aliases(text, path="_aliases.yaml")
    assert aliases == {
        "north_korea": ("North Korea", "DPRK", "北朝鮮", "북한"),
        "eu": ("EU", "European Union"),
        "mixed": ("ok",),
    }
    assert broken == {"bad"}
    assert [str(e).split(": ")[0] for e in errors] == [
        "_aliases.yaml:5:6",
        "_aliases.yaml:6:14",
        "_aliases.yaml:6:18",
        "_aliases.yaml:6:27",
        "_aliases.yaml:6:32",
        "_aliases.yaml:7:1",
    ]
    assert "defined twice (first on line 2)" in str(errors[-1])
    assert parse_aliases("", path="a") == ({}, set(), [])


def test_broken_files_never_take_the_others_down(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        {
            "_aliases.yaml": "nk: [DPRK, 북한]\nbroken: 12\n",
            "good.yaml": "query: Japan\n",
            "uses-alias.yaml": "query: '@NK AND missile'\n",
            "uses-broken.yaml": "query: '@broken'\n",
            "bad-query.yaml": "query: Japan AND\n",
            "bad-yaml.yaml": "query: [\n",
            "latin1.yaml": b"name: caf\xe9\nquery: x\n",
            "notes.txt": "not a rule",
            "_draft.yaml": "query: (((\n",
            ".hidden.yaml": "query: (((\n",
            "good.yml": "query: EU\n",
        },
    )
    rs = load_rules(folder)
    assert [r.id for r in rs.rules] == ["good", "uses-alias"]
    assert rs.aliases == {"nk": ("DPRK", "북한")}
    messages = [str(e) for e in rs.errors]
    where = [m.split(": ")[0].replace(str(folder) + "/", "") for m in messages]
    assert where == [
        "_aliases.yaml:2:9",
        "bad-query.yaml:1:17",
        "bad-yaml.yaml:2:1",
        "good.yml:1:1",
        "latin1.yaml:1:10",
        "uses-broken.yaml:1:9",
    ]
    assert "alias @broken has errors in _aliases.yaml" in messages[-1]
    assert "already used by" in messages[3]
    assert "not valid UTF-8" in messages[4]
    assert rs.get("good") is not None and rs.get("nope") is None


def test_missing_folder_is_an_error_not_an_exception(tmp_path: Path) -> None:
    rs = load_rules(tmp_path / "nope")
    assert rs.rules == () and len(rs.errors) == 1


# --- the seed rules --------------------------------------------------------------------------

SEED_STORY = {
    "title": "Japan and EU sign security and defense partnership",
    "summary": (
        "TOKYO (AFP) - Japan and the European Union signed a security and defence partnership "
        "on Friday, as the EU's top diplomat Josep Borrell visited Tokyo."
    ),
    "content": "",
    "author": "AFP",
}


@pytest.fixture(scope="module")
def seed() -> tuple[RuleSet, Matcher]:
    rs = load_rules(ROOT / "rules")
    return rs, Matcher.compile(rs.rules, rs.aliases)


def test_seed_rules_load_cleanly(seed: tuple[RuleSet, Matcher]) -> None:
    rs, _ = seed
    assert rs.errors == ()
    assert {r.id for r in rs.rules} == {"japan", "eu", "japan-eu-defense", "north-korea"}
    assert {"japan", "eu", "north_korea"} <= set(rs.aliases)


def test_seed_rules_catch_the_seed_story(seed: tuple[RuleSet, Matcher]) -> None:
    _, matcher = seed
    found = {m.rule: m for m in matcher.match(SEED_STORY, source="AFP")}
    assert set(found) == {"japan", "eu", "japan-eu-defense"}
    pact = found["japan-eu-defense"]
    assert pact.fields == ("title", "summary")
    assert pact.terms[:5] == ("Japan", "EU", "security", "defense", "partnership")


@pytest.mark.parametrize(
    ("title", "rules"),
    [
        ("Japanese baseball league opens its season", set()),
        ("A neutral Europe, says Swiss minister", set()),
        ("EUphoria as markets rally", set()),
        ("South Korea and the US hold drills", set()),
        ("Korea Times: weather", set()),
        ("North Korea fires ballistic missile", {"north-korea"}),
        ("Pyongyang says it tested a missile", {"north-korea"}),
        ("북한이 탄도미사일 발사", {"north-korea"}),
        ("北朝鮮がミサイル発射", {"north-korea"}),
        ("Kim Jong-un visits factory", {"north-korea"}),
        ("Tokyo stocks close higher", {"japan"}),
        ("日本と欧州連合、安全保障協力で合意", {"japan", "eu", "japan-eu-defense"}),
        ("EU and Japan to deepen defence cooperation", {"japan", "eu", "japan-eu-defense"}),
        ("Japan, EU discuss trade", {"japan", "eu"}),
    ],
)
def test_seed_rules_on_headlines(
    seed: tuple[RuleSet, Matcher], title: str, rules: set[str]
) -> None:
    _, matcher = seed
    assert {m.rule for m in matcher.match({"title": title}, source="wire")} == rules
