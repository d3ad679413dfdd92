"""Rule files: ``rules/*.yaml`` (one rule each, the stem is its id) and ``rules/_aliases.yaml``.

Everything a user can get wrong becomes a :class:`RuleError` with the file, line and column,
and a broken file is left out while the others load: :func:`load_rules` never raises for a
user's mistake. YAML is read with PyYAML's composer, which keeps every value's position.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from scraper.errors import RuleError
from scraper.models import Priority, Rule
from scraper.rules.cron import CronError, parse_cron
from scraper.rules.query import Alias, phrase_words, walk
from scraper.rules.query import parse_query as _parse_query
from scraper.rules.text import words

ALIAS_FILES = ("_aliases.yaml", "_aliases.yml")
RULE_SUFFIXES = (".yaml", ".yml")
RULE_KEYS = ("name", "query", "notify", "sources", "digest", "priority", "enabled")
PRIORITIES = ("low", "normal", "high")
ALIAS_NAME = re.compile(r"[^\W-][\w-]*")

_TAG = "tag:yaml.org,2002:"
_KINDS = {
    "str": "text",
    "int": "a number",
    "float": "a number",
    "bool": "true/false",
    "null": "nothing",
    "timestamp": "a date",
}


@dataclass(frozen=True)
class RuleSet:
    """The rules that loaded, the alias sets, and every error found on the way."""

    rules: tuple[Rule, ...] = ()
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    errors: tuple[RuleError, ...] = ()

    def get(self, rule_id: str) -> Rule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None


# --- YAML with positions ---------------------------------------------------------------------


class _Doc:
    """One YAML file's text, for errors that point into it."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.lines = text.split("\n")
        self.errors: list[RuleError] = []

    def error(self, message: str, where: yaml.Node | tuple[int, int] | None) -> None:
        if isinstance(where, yaml.Node):
            line, col = where.start_mark.line + 1, where.start_mark.column + 1
        elif where is not None:
            line, col = where
        else:
            line, col = 1, 1
        self.errors.append(RuleError(message, file=self.path, line=line, col=col))

    def sorted_errors(self) -> list[RuleError]:
        return sorted(self.errors, key=lambda e: (e.line or 0, e.col or 0))

    def compose(self) -> yaml.Node | None:
        try:
            return cast(yaml.Node | None, yaml.compose(self.text, Loader=yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "not valid YAML"
            where = (mark.line + 1, mark.column + 1) if mark else None
            self.error(f"invalid YAML: {problem}{_yaml_hint(problem)}", where)
        except yaml.YAMLError as exc:  # a ReaderError: a character YAML does not allow
            position = getattr(exc, "position", 0)
            before = self.text[:position]
            where = (before.count("\n") + 1, position - before.rfind("\n"))
            self.error(f"invalid YAML: {getattr(exc, 'reason', exc)}", where)
        return None

    def position(self, node: yaml.ScalarNode, offset: int) -> tuple[int, int]:
        """Where in the file the character ``offset`` of a scalar's value is: exact for a plain
        or quoted scalar on one line, close for folded and multi-line ones."""
        start, end = node.start_mark, node.end_mark
        quoted = 1 if node.style in ("'", '"') else 0
        if start.line == end.line and node.style in (None, "'", '"'):
            return start.line + 1, start.column + 1 + quoted + offset
        value = str(node.value)
        best = (start.line + 1, start.column + 1)
        cursor = 0
        for ln in range(start.line, min(end.line, len(self.lines) - 1) + 1):
            raw = self.lines[ln]
            first = start.column if ln == start.line else 0
            seg = raw[first : end.column if ln == end.line else len(raw)]
            if ln == start.line and node.style in ("|", ">"):
                continue  # the indicator line
            body = seg.lstrip()
            lead = first + len(seg) - len(body)
            body = body.rstrip()
            if quoted and ln == start.line and body[:1] == node.style:
                body, lead = body[1:], lead + 1
            if quoted and ln == end.line and body[-1:] == node.style:
                body = body[:-1]
            if not body:
                continue
            at = value.find(body[:12], cursor)
            if at < 0:
                continue
            if at > offset:
                break
            best = (ln + 1, lead + 1 + (offset - at))
            cursor = at + 1
        return best


def _yaml_hint(problem: str) -> str:
    if "cannot start any token" in problem or "found undefined alias" in problem:
        return (
            "; a value starting with @, \", ', * or & must be quoted as a whole, "
            "as in query: '@north_korea AND missile'"
        )
    if "mapping values are not allowed" in problem:
        return "; a value holding ': ' must be quoted as a whole, as in query: 'a: b'"
    if "expected <block end>" in problem:
        return (
            "; a value starting with a quote must be quoted as a whole, "
            "as in query: '\"North Korea\" AND missile'"
        )
    return ""


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    tag = str(node.tag)
    return _KINDS.get(tag.removeprefix(_TAG), tag) if tag.startswith(_TAG) else tag


def _is_str(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "str"


def _read(path: Path) -> tuple[str | None, RuleError | None]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, RuleError(f"cannot read the file: {exc.strerror or exc}", file=path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        return None, RuleError("not valid UTF-8 text", file=path, line=line, col=col)


# --- aliases ---------------------------------------------------------------------------------


def parse_aliases(
    text: str, *, path: str = ALIAS_FILES[0]
) -> tuple[dict[str, tuple[str, ...]], set[str], list[RuleError]]:
    """Alias sets from the text of an aliases file: ``(aliases, broken names, errors)``.

    A set with a bad member keeps its good ones; a name whose set has none is "broken", so
    rules using it can say so rather than call the alias unknown.
    """
    doc = _Doc(text, path)
    root = doc.compose()
    aliases: dict[str, tuple[str, ...]] = {}
    broken: set[str] = set()
    if root is None:
        return aliases, broken, doc.errors
    if not isinstance(root, yaml.MappingNode):
        doc.error(
            f'expected alias sets, one a line (name: [a, b, "c d"]), found {_kind(root)}', root
        )
        return aliases, broken, doc.errors
    seen: dict[str, int] = {}
    for key, value in root.value:
        if not _is_str(key) or not ALIAS_NAME.fullmatch(str(key.value)):
            doc.error("expected an alias name (letters, digits, _ or -) before ':'", key)
            continue
        name = str(key.value)
        if name.casefold() in seen:
            doc.error(
                f"alias '{name}' is defined twice (first on line {seen[name.casefold()]})", key
            )
            continue
        seen[name.casefold()] = key.start_mark.line + 1
        members = _alias_members(doc, name, value)
        if members:
            aliases[name] = members
        else:
            broken.add(name.casefold())
    return aliases, broken, doc.sorted_errors()


def _alias_members(doc: _Doc, name: str, node: yaml.Node) -> tuple[str, ...]:
    if not isinstance(node, yaml.SequenceNode):
        doc.error(
            f"alias '{name}': expected a list of terms, as in {name}: [DPRK, \"North Korea\"], "
            f"found {_kind(node)}",
            node,
        )
        return ()
    out: list[str] = []
    for item in node.value:
        if not _is_str(item):
            doc.error(
                f"alias '{name}': expected a term or phrase (text), found {_kind(item)}", item
            )
            continue
        member = str(item.value)
        problem: tuple[str, int] | None = None
        if not member.strip():
            problem = ("an alias member cannot be empty", 0)
        elif member.lstrip().startswith("@"):
            problem = ("an alias member cannot name another alias", member.find("@"))
        elif not words(member.replace("*", " ")):
            problem = (f"'{member}' has no letters or digits to search for", 0)
        else:
            try:
                phrase_words(member, 1)
            except RuleError as exc:
                problem = (exc.message, (exc.col or 1) - 1)
        if problem:
            doc.error(f"alias '{name}': {problem[0]}", doc.position(item, problem[1]))
        elif member not in out:
            out.append(member)
    return tuple(out)


# --- rules -----------------------------------------------------------------------------------


def parse_rule(
    text: str,
    *,
    rule_id: str,
    path: str,
    aliases: Mapping[str, tuple[str, ...]],
    broken_aliases: frozenset[str] | set[str] = frozenset(),
) -> tuple[Rule | None, list[RuleError]]:
    """One rule file's text -> the rule, or None and every error found in it."""
    doc = _Doc(text, path)
    root = doc.compose()
    if root is None:
        if not doc.errors:
            doc.error("the rule file is empty; expected at least query: …", None)
        return None, doc.errors
    if not isinstance(root, yaml.MappingNode):
        doc.error(f"expected rule settings (name:, query:, …), found {_kind(root)}", root)
        return None, doc.errors
    nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in root.value:
        if not _is_str(key):
            doc.error(f"expected a setting name, found {_kind(key)}", key)
            continue
        name = str(key.value)
        if name in nodes:
            first = nodes[name][0].start_mark.line + 1
            doc.error(f"'{name}' is set twice (first on line {first})", key)
        elif name not in RULE_KEYS:
            close = difflib.get_close_matches(name, RULE_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            doc.error(f"unknown key '{name}'; {hint}expected one of {', '.join(RULE_KEYS)}", key)
        else:
            nodes[name] = (key, value)
    values: dict[str, Any] = {}
    for name, check in _CHECKS.items():
        if name in nodes:
            key, value = nodes[name]
            values[name] = check(doc, value, name)
    if "query" not in nodes:
        doc.error("missing query: every rule needs one, as in query: Japan AND EU", root)
    else:
        _check_query(doc, nodes["query"][1], aliases, broken_aliases)
    if doc.errors:
        return None, doc.sorted_errors()
    rule = Rule(
        id=rule_id,
        name=values.get("name") or rule_id,
        query=values["query"],
        notify=values.get("notify"),
        sources=values.get("sources"),
        digest=values.get("digest"),
        priority=cast(Priority, values.get("priority", "normal")),
        enabled=values.get("enabled", True),
        path=path,
    )
    return rule, []


def _text(doc: _Doc, node: yaml.Node, name: str) -> str | None:
    if not _is_str(node):
        quote = " (put it in quotes)" if isinstance(node, yaml.ScalarNode) else ""
        doc.error(f"{name}: expected text, found {_kind(node)}{quote}", node)
        return None
    value = str(node.value)
    if not value.strip():
        doc.error(f"{name}: cannot be empty", node)
        return None
    return value


def _list(doc: _Doc, node: yaml.Node, name: str) -> tuple[str, ...] | None:
    example = {"notify": "[email, telegram]", "sources": "[japan, wire]"}[name]
    if not isinstance(node, yaml.SequenceNode):
        doc.error(f"{name}: expected a list, as in {name}: {example}, found {_kind(node)}", node)
        return None
    out: list[str] = []
    for item in node.value:
        value = _text(doc, item, name)
        if value is not None:
            out.append(value)
    if name == "sources" and not node.value:
        doc.error("sources: an empty list matches no source; leave it out for every source", node)
    return tuple(out)


def _digest(doc: _Doc, node: yaml.Node, name: str) -> str | None:
    value = _text(doc, node, name)
    if value is None:
        return None
    try:
        parse_cron(value)
    except CronError as exc:
        assert isinstance(node, yaml.ScalarNode)
        doc.error(f"digest: {exc.message}", doc.position(node, exc.offset))
        return None
    return value


def _priority(doc: _Doc, node: yaml.Node, name: str) -> str | None:
    if not _is_str(node) or node.value not in PRIORITIES:
        shown = f"'{node.value}'" if isinstance(node, yaml.ScalarNode) else _kind(node)
        doc.error(f"priority: expected low, normal or high, found {shown}", node)
        return None
    return str(node.value)


def _enabled(doc: _Doc, node: yaml.Node, name: str) -> bool | None:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _TAG + "bool":
        shown = f"'{node.value}'" if isinstance(node, yaml.ScalarNode) else _kind(node)
        doc.error(f"enabled: expected true or false, found {shown}", node)
        return None
    return str(node.value).lower() in ("true", "yes", "on", "y")


_CHECKS: dict[str, Callable[[_Doc, yaml.Node, str], Any]] = {
    "name": _text,
    "query": _text,
    "notify": _list,
    "sources": _list,
    "digest": _digest,
    "priority": _priority,
    "enabled": _enabled,
}


def _check_query(
    doc: _Doc,
    node: yaml.Node,
    aliases: Mapping[str, tuple[str, ...]],
    broken: frozenset[str] | set[str],
) -> None:
    if not _is_str(node) or not str(node.value).strip():
        return  # reported by _text
    assert isinstance(node, yaml.ScalarNode)
    text = str(node.value)
    try:
        query = _parse_query(text)
    except RuleError as exc:
        doc.error(f"query: {exc.message}", doc.position(node, (exc.col or 1) - 1))
        return
    known = {name.casefold() for name in aliases}
    for n in walk(query):
        if isinstance(n, Alias) and n.name.casefold() not in known:
            if n.name.casefold() in broken:
                message = f"alias @{n.name} has errors in {ALIAS_FILES[0]}"
            else:
                defined = ", ".join("@" + a for a in sorted(aliases)[:8]) or "none are defined"
                message = f"unknown alias @{n.name}; expected one of {defined}"
            doc.error(f"query: {message}", doc.position(node, n.col - 1))


# --- the folder ------------------------------------------------------------------------------


def load_rules(folder: Path) -> RuleSet:
    """Load every rule file and the aliases file of ``folder``.

    Never raises for a user's mistake: a broken file becomes errors and is left out, and the
    other files still load. Files whose names start with ``.`` or ``_`` (other than the aliases
    file) are not rules and are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return RuleSet(errors=(RuleError("the rules folder does not exist", file=folder),))
    errors: list[RuleError] = []
    aliases: dict[str, tuple[str, ...]] = {}
    broken: set[str] = set()
    alias_paths = [folder / n for n in ALIAS_FILES if (folder / n).is_file()]
    for extra in alias_paths[1:]:
        errors.append(
            RuleError(
                f"use one aliases file, not both {ALIAS_FILES[0]} and {ALIAS_FILES[1]}",
                file=extra,
                line=1,
                col=1,
            )
        )
    if alias_paths:
        text, err = _read(alias_paths[0])
        if err is not None:
            errors.append(err)
        else:
            assert text is not None
            aliases, broken, alias_errors = parse_aliases(text, path=str(alias_paths[0]))
            errors.extend(alias_errors)
    rules: list[Rule] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if (
            path.suffix.lower() not in RULE_SUFFIXES
            or path.name.startswith((".", "_"))
            or not path.is_file()
        ):
            continue
        rule_id = path.stem
        if rule_id in seen:
            errors.append(
                RuleError(
                    f"rule id '{rule_id}' is already used by {seen[rule_id]}",
                    file=path,
                    line=1,
                    col=1,
                )
            )
            continue
        seen[rule_id] = path
        text, err = _read(path)
        if err is not None:
            errors.append(err)
            continue
        assert text is not None
        rule, rule_errors = parse_rule(
            text, rule_id=rule_id, path=str(path), aliases=aliases, broken_aliases=broken
        )
        errors.extend(rule_errors)
        if rule is not None:
            rules.append(rule)
    return RuleSet(tuple(rules), aliases, tuple(errors))
