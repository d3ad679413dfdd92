"""Library entry points that the CLI (and the daemon) call: each builds the parts it needs from
the settings, does one job and returns a result. Nothing here prints or exits."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from scraper.clock import Clock, utcnow
from scraper.errors import ConfigError
from scraper.fetch import Fetcher
from scraper.isolate import ParserPool
from scraper.pipeline import PassSummary, Pipeline, SourceOutcome
from scraper.rules import Matcher, RuleSet, load_rules
from scraper.settings import Settings
from scraper.store import Store


@dataclass(frozen=True)
class LoadedRules:
    ruleset: RuleSet
    matcher: Matcher


def load_matcher(settings: Settings) -> LoadedRules:
    """Load every valid rule file; broken ones are reported in ``ruleset.errors`` and skipped."""
    ruleset = load_rules(settings.rules)
    return LoadedRules(ruleset, Matcher.compile(ruleset.rules, ruleset.aliases))


def open_store(settings: Settings) -> Store:
    return Store.open(settings.database)


def select_sources(settings: Settings, only: str | None) -> list:  # type: ignore[type-arg]
    sources = [s for s in settings.sources if s.enabled]
    if only is None:
        return sources
    chosen = [s for s in settings.sources if s.name == only]
    if not chosen:
        names = ", ".join(s.name for s in settings.sources)
        raise ConfigError(f'no source named "{only}" (sources: {names})', file=settings.path)
    return chosen


def run_once(
    settings: Settings,
    *,
    only: str | None = None,
    dry_run: bool = False,
    due_only: bool = False,
    clock: Clock = utcnow,
    progress: Callable[[SourceOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> PassSummary:
    """One pass over the enabled sources (or the one named): fetch, parse, store, match."""
    sources = select_sources(settings, only)
    rules = load_matcher(settings)
    store: Store | None
    if dry_run:
        store = Store.open(settings.database, readonly=True) if settings.database.exists() else None
    else:
        store = open_store(settings)
    try:
        if store is not None and not dry_run:
            store.sync_sources(settings.sources, clock())
        workers = os.cpu_count() or 2
        with (
            Fetcher(
                user_agent=settings.user_agent,
                concurrency=settings.concurrency,
                per_host=settings.per_host,
                clock=clock,
            ) as fetcher,
            ParserPool(workers=workers, timeout=settings.parse_timeout) as parser,
        ):
            pipeline = Pipeline(
                fetcher=fetcher,
                parser=parser,
                matcher=rules.matcher,
                story_window=settings.alerts.story_window,
                clock=clock,
            )
            if on_start is not None:
                on_start(len(sources))
            summary = pipeline.run_pass(
                store,
                sources,
                workers=settings.concurrency,
                dry_run=dry_run,
                due_only=due_only,
                progress=progress,
            )
        summary.rule_errors = len(rules.ruleset.errors)
        return summary
    finally:
        if store is not None:
            store.close()
