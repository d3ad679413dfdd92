"""Hot reload of the rules folder, keeping the last good version of each rule.

:class:`RulesWatcher` notices a change by the folder's listing and each file's modification
time and size (a cheap ``stat`` every few seconds; no extra dependency), then loads the whole
folder again. A rule file that no longer loads keeps running in its last good version and is
reported (:attr:`RulesReload.failing`); the other rules are unaffected. An aliases file with
errors keeps the sets that still load, plus the last good version of the others, so a broken
alias does not take down every rule that uses it. A rule file that is deleted is dropped.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from scraper.alerts import AlertPolicy, insert_alert
from scraper.clock import iso
from scraper.errors import RuleError
from scraper.models import Rule
from scraper.rules import Matcher, RuleSet, load_rules
from scraper.rules.loader import ALIAS_FILES, RULE_SUFFIXES
from scraper.store import Store

Signature = tuple[tuple[str, int, int], ...]
SETTLE = 1.0  # seconds a changed file must stay unchanged before it is loaded


@dataclass(frozen=True)
class Failure:
    """A rule or aliases file that does not load: where, what, and a digest of the errors."""

    file: str  # as shown to people: "rules/foo.yaml"
    errors: tuple[str, ...]  # "rules/foo.yaml:3:8: message"
    kept: bool  # its last good version keeps running
    path: str = ""  # the file itself

    @property
    def digest(self) -> str:
        return hashlib.sha1("\n".join(self.errors).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RulesReload:
    """The effective rules after a (re)load and what changed."""

    ruleset: RuleSet  # what runs: good rules, last good versions of failing ones
    matcher: Matcher
    failing: tuple[Failure, ...] = ()
    new_failures: tuple[Failure, ...] = ()  # failing now, not (or differently) before
    recovered: tuple[str, ...] = ()  # files that load again
    added: tuple[str, ...] = ()  # rule ids
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()  # rule ids running their last good version
    errors: tuple[RuleError, ...] = field(default=())


def folder_signature(folder: Path) -> Signature:
    """(name, mtime_ns, size) of every rule and alias file; empty when the folder is gone."""
    entries: list[tuple[str, int, int]] = []
    try:
        with_names = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return ()
    for path in with_names:
        if path.suffix.lower() not in RULE_SUFFIXES:
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        entries.append((path.name, st.st_mtime_ns, st.st_size))
    return tuple(entries)


class RulesWatcher:
    """Loads the rules folder and reloads it when it changes. Not thread-safe: one caller."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._signature: Signature | None = None
        self._good: dict[str, Rule] = {}
        self._good_aliases: dict[str, tuple[str, ...]] = {}
        self._failing: dict[str, Failure] = {}
        self.current: RulesReload | None = None

    def display(self, file: str | Path) -> str:
        path = Path(file)
        try:
            return str(Path(self.folder.name) / path.relative_to(self.folder))
        except ValueError:
            return str(path)

    def changed(self) -> bool:
        return folder_signature(self.folder) != self._signature

    def poll(self, settle: float = SETTLE) -> RulesReload | None:
        """Reload if anything in the folder changed since the last load; else None. A file
        modified less than ``settle`` seconds ago waits for the next call: an editor may be
        writing it (a half-written file would be reported as broken, then as recovered)."""
        if self.current is not None and not self.changed():
            return None
        newest = max((mtime for _, mtime, _ in folder_signature(self.folder)), default=0)
        if self.current is not None and time.time_ns() - newest < settle * 1e9:
            return None
        return self.load()

    def move(self, folder: Path) -> RulesReload:
        """Watch another folder (the configuration changed): a fresh start."""
        self.folder = Path(folder)
        self._good, self._good_aliases = {}, {}
        return self.load()

    def load(self) -> RulesReload:
        self._signature = folder_signature(self.folder)
        loaded = load_rules(self.folder)
        by_file: dict[str, list[RuleError]] = {}
        for error in loaded.errors:
            by_file.setdefault(error.file or str(self.folder), []).append(error)

        folder_gone = str(self.folder) in by_file and not self.folder.is_dir()
        alias_broken = any(Path(f).name in ALIAS_FILES for f in by_file)
        aliases: Mapping[str, tuple[str, ...]] = loaded.aliases
        if folder_gone or alias_broken:
            aliases = {**self._good_aliases, **loaded.aliases}

        rules = {rule.id: rule for rule in loaded.rules}
        kept: list[str] = []
        if folder_gone:  # an unmounted volume: keep everything as it was
            for rule_id, rule in self._good.items():
                rules.setdefault(rule_id, rule)
                kept.append(rule_id)
        for file in by_file:
            path = Path(file)
            if path.suffix.lower() not in RULE_SUFFIXES or path.name in ALIAS_FILES:
                continue
            rule_id = path.stem
            if rule_id not in rules and rule_id in self._good and path.exists():
                rules[rule_id] = self._good[rule_id]
                kept.append(rule_id)

        before = self._good
        ordered = tuple(rules[k] for k in sorted(rules))
        matcher = Matcher.compile(ordered, aliases)
        failing: dict[str, Failure] = {}
        for file, errors in by_file.items():
            shown = self.display(file)
            texts = tuple(
                str(RuleError(e.message, file=shown, line=e.line, col=e.col)) for e in errors
            )
            failing[shown] = Failure(shown, texts, Path(file).stem in kept or folder_gone, file)
        for error in matcher.errors:  # a kept rule that no longer compiles with new aliases
            file = error.file or str(self.folder)
            shown = self.display(file)
            failing.setdefault(shown, Failure(shown, (str(error),), False, file))

        new_failures = tuple(
            f
            for name, f in failing.items()
            if name not in self._failing or self._failing[name].digest != f.digest
        )
        recovered = tuple(  # a file deleted while failing is simply gone
            name
            for name, f in self._failing.items()
            if name not in failing and Path(f.path).exists()
        )
        self._failing = failing
        self._good = dict(rules)
        self._good_aliases = dict(aliases)
        self.current = RulesReload(
            ruleset=RuleSet(ordered, dict(aliases), loaded.errors),
            matcher=matcher,
            failing=tuple(failing.values()),
            new_failures=new_failures,
            recovered=recovered,
            added=tuple(sorted(set(rules) - set(before))),
            removed=tuple(sorted(set(before) - set(rules))),
            changed=tuple(sorted(k for k in set(rules) & set(before) if rules[k] != before[k])),
            kept=tuple(sorted(kept)),
            errors=loaded.errors,
        )
        return self.current


def rule_alerts(store: Store, loaded: RulesReload, policy: AlertPolicy, now: datetime) -> int:
    """Health alerts (to the ``[health]`` targets) for rule files that stopped loading, once
    per distinct failure (across restarts too), and for files that load again. Returns how
    many rows were queued."""
    count = 0
    with store.transaction():
        for failure in loaded.new_failures:
            detail = "; ".join(failure.errors[:3])
            if failure.kept:
                detail += " (its last good version keeps running)"
            for target in policy.health_targets():
                count += insert_alert(
                    store,
                    dedupe_key=f"rules:{failure.file}:{failure.digest}:{target.name}",
                    kind="health",
                    target=target.name,
                    now=now,
                    priority="high",
                    payload={"source": failure.file, "event": "failing", "detail": detail},
                )
        for file in loaded.recovered:
            for target in policy.health_targets():
                count += insert_alert(
                    store,
                    dedupe_key=f"rules:{file}:recovered:{iso(now)}:{target.name}",
                    kind="health",
                    target=target.name,
                    now=now,
                    priority="high",
                    payload={"source": file, "event": "recovered", "detail": "it loads again"},
                )
    return count
