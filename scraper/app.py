"""Library entry points that the CLI (and the daemon) call: each builds the parts it needs from
the settings, does one job and returns a result. Nothing here prints or exits."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from scraper.alerts import AlertPolicy, AlertQueue
from scraper.clock import Clock, utcnow
from scraper.delivery import Deliverer, DeliveryReport, Sender, StdoutSender
from scraper.errors import ConfigError
from scraper.fetch import Fetcher
from scraper.isolate import ParserPool
from scraper.notify import Notifier
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


def alert_policy(settings: Settings, ruleset: RuleSet) -> AlertPolicy:
    return AlertPolicy(
        alerts=settings.alerts,
        health=settings.health,
        rules={rule.id: rule for rule in ruleset.rules},
        targets=tuple(settings.targets),
        timezone=ZoneInfo(settings.timezone),
    )


def make_sender(settings: Settings, policy: AlertPolicy) -> tuple[Sender, Notifier | None]:
    """Apprise for the configured targets; standard output when there are none."""
    if not settings.targets:
        return StdoutSender(policy), None
    notifier = Notifier(settings.targets, timezone=settings.timezone)
    return notifier, notifier


def deliver(
    settings: Settings,
    store: Store,
    policy: AlertPolicy,
    *,
    clock: Clock = utcnow,
    wait_budget: float = 0.0,
    sleep: Callable[[float], None] | None = time.sleep,
    sender: Sender | None = None,
) -> DeliveryReport:
    """Deliver whatever is due: health alerts, releases, retries, new alerts."""
    notifier: Notifier | None = None
    if sender is None:
        sender, notifier = make_sender(settings, policy)
    deliverer = Deliverer(
        store,
        policy,
        sender,
        sources=settings.sources,
        clock=clock,
        sleep=sleep,
        wait_budget=wait_budget,
    )
    return deliverer.run(redacted=notifier.redacted if notifier else None)


def run_once(
    settings: Settings,
    *,
    only: str | None = None,
    dry_run: bool = False,
    due_only: bool = False,
    clock: Clock = utcnow,
    progress: Callable[[SourceOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    sender: Sender | None = None,
    sleep: Callable[[float], None] | None = time.sleep,
) -> PassSummary:
    """One pass over the enabled sources (or the one named): fetch, parse, store, match,
    queue alerts; then deliver what is due."""
    sources = select_sources(settings, only)
    rules = load_matcher(settings)
    policy = alert_policy(settings, rules.ruleset)
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
            parser.set_rules(rules.ruleset.rules, dict(rules.ruleset.aliases))  # match in workers
            pipeline = Pipeline(
                fetcher=fetcher,
                parser=parser,
                matcher=rules.matcher,
                after_store=None if dry_run else AlertQueue(policy),
                story_window=settings.alerts.story_window,
                clock=clock,
            )
            summary = pipeline.run_pass(
                store,
                sources,
                workers=settings.concurrency,
                dry_run=dry_run,
                due_only=due_only,
                progress=progress,
                on_start=on_start,
            )
        summary.rule_errors = len(rules.ruleset.errors)
        if store is not None and not dry_run:
            report = deliver(
                settings, store, policy, clock=clock, wait_budget=30.0, sleep=sleep, sender=sender
            )
            summary.alerts_sent = report.sent
            summary.alerts_failed = report.failed + report.dead
            summary.alerts_held = report.held
        return summary
    finally:
        if store is not None:
            store.close()
