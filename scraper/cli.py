"""The command line: parse options, call one library function, turn errors into a message and
an exit status (0 ok, 1 needs attention, 2 usage or configuration error). The only module that
prints or exits."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from scraper import __version__
from scraper.clock import utcnow
from scraper.errors import ConfigError, RuleError, ScraperError, StoreError
from scraper.settings import Settings, default_config_path, load_settings, parse_duration

log = logging.getLogger("scraper")


def fail(message: str, status: int = 2) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(status)


@contextmanager
def user_errors() -> Iterator[None]:
    """Our own errors become one line and an exit status; no traceback for a user's mistake."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), 2)
    except RuleError as exc:
        fail(str(exc), 2)
    except StoreError as exc:
        fail(str(exc), 1)
    except ScraperError as exc:
        fail(str(exc), 1)


class Context:
    def __init__(self, config: str | None) -> None:
        self.config_path = Path(config) if config else default_config_path(os.environ)
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            if not self.config_path.exists():
                raise ConfigError(
                    "configuration file not found (use --config FILE or set $SCRAPER_CONFIG)",
                    file=self.config_path,
                )
            self._settings = load_settings(self.config_path, os.environ)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


LOG_FORMATS = ("auto", "text", "kv", "json")


def setup_logging(verbose: int, quiet: bool, log_format: str = "auto") -> None:
    """Log lines go to standard error: ``text`` for a terminal, ``kv`` (key=value) or ``json``
    for a log collector; ``auto`` picks text on a terminal and kv otherwise."""
    from scraper.logs import configure

    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    configure(level, log_format)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Configuration file (default: scraper.toml, or $SCRAPER_CONFIG).",
)
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="auto",
    envvar="SCRAPER_LOG_FORMAT",
    show_default=True,
    help="Log lines as text, key=value (kv) or JSON; auto: text on a terminal, else kv.",
)
@click.version_option(__version__, prog_name="scraper")
@click.pass_context
def main(
    ctx: click.Context, config: str | None, verbose: int, quiet: bool, log_format: str
) -> None:
    """A self-hosted news scraper with keyword alerting."""
    setup_logging(verbose, quiet, log_format)
    ctx.obj = Context(config)


# -- run ---------------------------------------------------------------------------------------


@main.command()
@click.option("--once", is_flag=True, help="One pass over every enabled source, then exit.")
@click.option("--source", "only", metavar="NAME", help="Only this source.")
@click.option("--dry-run", is_flag=True, help="Fetch, parse and match; write and send nothing.")
@click.option("--due", is_flag=True, help="Only sources whose next fetch time has come.")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, hidden=True)
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help="Log lines as text, kv (key=value) or json (default: text on a terminal, else kv).",
)
@pass_ctx
def run(
    ctx: Context,
    once: bool,
    only: str | None,
    dry_run: bool,
    due: bool,
    config: str | None,
    verbose: int,
    quiet: bool,
    log_format: str | None,
) -> None:
    """Poll the sources, archive new items, match rules and alert.

    Without --once: the daemon. Each source is polled on its own interval, alerts are sent
    and retried, digests and quiet hours are released, rule files reload when they change,
    SIGHUP reloads the configuration, and SIGINT or SIGTERM stop it cleanly (exit 0).
    """
    from scraper.app import run_once

    if config:
        ctx.config_path = Path(config)
    if verbose or quiet or log_format:  # given after `run`: they win over the global ones
        top = click.get_current_context().find_root().params
        setup_logging(
            verbose + top.get("verbose", 0),
            quiet or top.get("quiet", False),
            log_format or top.get("log_format") or "auto",
        )
    if not once and not dry_run:
        if only or due:
            fail("--source and --due are for one pass: use them with --once", 2)
        from scraper.daemon import run_daemon

        with user_errors():
            status = run_daemon(ctx.settings, os.environ)
        sys.exit(status)
    with user_errors():
        settings = ctx.settings
        with progress_reporter() as (on_start, progress):
            summary = run_once(
                settings,
                only=only,
                dry_run=dry_run,
                due_only=due,
                clock=utcnow,
                progress=progress,
                on_start=on_start,
            )
    print_summary(summary)
    sys.exit(1 if summary.needs_attention else 0)


@contextmanager
def progress_reporter() -> Iterator[tuple[Callable[[int], None], Callable[[Any], None]]]:
    """A progress bar on a terminal; one log line per source otherwise."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task("polling", total=None)

            def on_start(total: int) -> None:
                bar.update(task, total=total)

            def progress(outcome: Any) -> None:
                bar.update(task, advance=1, description=f"{outcome.source[:30]:30}")

            yield on_start, progress
        return

    def quiet_start(total: int) -> None:
        log.info("polling %d sources", total)

    def log_line(outcome: Any) -> None:
        if outcome.ok:
            log.info(
                "poll source=%r status=%s new=%d updated=%d matches=%d",
                outcome.source,
                "unchanged" if outcome.unchanged else outcome.status,
                outcome.items_new,
                outcome.items_updated,
                outcome.matches,
            )
        else:
            log.warning(
                "poll source=%r status=%s error=%r", outcome.source, outcome.status, outcome.error
            )

    yield quiet_start, log_line


def print_summary(summary: Any) -> None:
    if summary.dry_run:
        for outcome in summary.outcomes:
            if not outcome.ok:
                continue
            click.echo(f"{outcome.source}: {outcome.items_new} new item(s) would be archived")
            for item, matches in outcome.new_items:
                when = item.published_at.strftime("%Y-%m-%d %H:%M") if item.published_at else "-"
                click.echo(f"  {when}  {item.title or '(no title)'}")
                if item.url:
                    click.echo(f"      {item.url}")
                for match in matches:
                    click.secho(
                        f"      would alert: rule {match.rule} ({', '.join(match.terms)})",
                        fg="yellow",
                    )
    ok, failed = summary.ok, summary.failed
    verb = "would be new" if summary.dry_run else "new"
    click.echo(
        f"{'Dry run' if summary.dry_run else 'Pass'} finished in {summary.duration:.1f}s: "
        f"{len(ok)} source(s) ok, {len(failed)} failed; "
        f"{summary.items_new} item(s) {verb}, {summary.items_updated} updated; "
        f"{summary.matches} match(es)"
        + (
            ""
            if summary.dry_run
            else f"; {summary.alerts_sent} alert(s) sent, {summary.alerts_failed} failed"
            + (f", {summary.alerts_held} held" if summary.alerts_held else "")
        )
        + "."
    )
    if failed:
        click.echo("Failed sources:")
        for outcome in failed:
            click.echo(f"  {outcome.source}: {outcome.status}: {outcome.error or ''}".rstrip())
    if summary.rule_errors:
        click.secho(
            f"{summary.rule_errors} rule file(s) are invalid and were skipped: "
            "see `scraper rules check`",
            fg="red",
            err=True,
        )


# -- check -------------------------------------------------------------------------------------


@main.command()
@pass_ctx
def check(ctx: Context) -> None:
    """Validate scraper.toml, every rule file and the targets' Apprise URLs."""
    from scraper.rules import load_rules

    with user_errors():
        settings = ctx.settings
    ruleset = load_rules(settings.rules)
    for error in ruleset.errors:
        click.echo(str(error), err=True)
    problems = len(ruleset.errors)
    from scraper.notify import check_targets

    target_errors = check_targets(settings)
    for message in target_errors:
        click.echo(message, err=True)
    problems += len(target_errors)
    from scraper.app import alert_policy

    for warning in alert_policy(settings, ruleset).routing_problems():
        click.echo(f"warning: {warning}", err=True)
    if problems:
        click.secho(f"{problems} problem(s) found", fg="red", err=True)
        sys.exit(2)
    click.echo(
        f"{settings.path}: ok ({len(settings.sources)} sources, {len(ruleset.rules)} rules, "
        f"{len(settings.targets)} targets)"
    )


# -- rules -------------------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """Rule files: check them, back-test them."""


@rules.command("check")
@pass_ctx
def rules_check(ctx: Context) -> None:
    """Validate every rule file and the alias file."""
    from scraper.rules import load_rules

    with user_errors():
        settings = ctx.settings
    ruleset = load_rules(settings.rules)
    for error in ruleset.errors:
        click.echo(str(error))
    if ruleset.errors:
        sys.exit(1)
    click.echo(f"{len(ruleset.rules)} rule(s) ok, {len(ruleset.aliases)} alias set(s)")


@rules.command("test")
@click.argument("rule_or_query")
@click.option("--query", "force_query", is_flag=True, help="Treat the argument as a query.")
@click.option("--since", default="7d", show_default=True, help="How far back, e.g. 7d, 12h.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0))
@pass_ctx
def rules_test(ctx: Context, rule_or_query: str, force_query: bool, since: str, limit: int) -> None:
    """Back-test a rule id or a query against the archive. Sends and changes nothing."""
    from scraper.rules import backtest, load_rules
    from scraper.store import Store

    try:
        window = parse_duration(since)
    except ValueError as exc:
        fail(f"--since: {exc}", 2)
    with user_errors():
        settings = ctx.settings
        ruleset = load_rules(settings.rules)
        store = Store.open(settings.database, readonly=True)
        try:
            result = _backtest_or_explain(
                backtest,
                store.conn,
                rule_or_query,
                rules=ruleset,
                force_query=force_query,
                since=utcnow() - timedelta(seconds=window),
                limit=limit,
            )
        finally:
            store.close()
    print_backtest(result, since)


def _backtest_or_explain(backtest: Any, conn: Any, text: str, **kw: Any) -> Any:
    """Run the back-test; a query that does not parse is shown with a caret under the column."""
    try:
        return backtest(conn, text, **kw)
    except RuleError as exc:
        if exc.file is None and exc.col is not None:
            click.echo(f"  {text}", err=True)
            click.echo("  " + " " * (exc.col - 1) + "^", err=True)
            fail(f"query, column {exc.col}: {exc.message}", 2)
        raise


def print_backtest(result: Any, since: str) -> None:
    from scraper.rules import highlight_spans

    label = f"rule {result.rule_id}" if result.rule_id else "query"
    click.echo(f"{label}: {result.query}")
    click.echo(f"{result.total} item(s) matched in the last {since}")
    color = sys.stdout.isatty()
    for hit in result.items:
        title = hit.title or "(no title)"
        if color:
            spans = highlight_spans(title, hit.terms)
            out, pos = [], 0
            for start, end in spans:
                out.append(title[pos:start])
                out.append(click.style(title[start:end], bold=True, fg="yellow"))
                pos = end
            out.append(title[pos:])
            title = "".join(out)
        when = (hit.published_at or "")[:16].replace("T", " ")
        click.echo(f"  {when:16}  [{hit.source}] {title}")
        click.echo(f"      {', '.join(hit.terms)} in {', '.join(hit.fields)}  {hit.url or ''}")


# -- sources -----------------------------------------------------------------------------------


@main.group()
def sources() -> None:
    """List, import (OPML) and export (OPML) sources."""


@sources.command("list")
@pass_ctx
def sources_list(ctx: Context) -> None:
    """List the configured sources."""
    with user_errors():
        settings = ctx.settings
    for source in settings.sources:
        state = "" if source.enabled else "  (disabled)"
        tags = f"  [{', '.join(source.tags)}]" if source.tags else ""
        click.echo(f"{source.name}  {source.kind}  {source.url}{tags}{state}")


@sources.command("import")
@click.argument("opml_file", type=click.Path(exists=True, dir_okay=False))
@pass_ctx
def sources_import(ctx: Context, opml_file: str) -> None:
    """Append the feeds of an OPML file to scraper.toml, keeping its comments."""
    from scraper.opml import append_sources_to_config, parse_opml

    with user_errors():
        settings = ctx.settings
        found = parse_opml(Path(opml_file).read_bytes(), file=opml_file)
        added, skipped = append_sources_to_config(settings.path, list(found.sources))
        load_settings(settings.path, os.environ)
    for source in added:
        click.echo(f"added: {source.name}  {source.url}")
    for line in found.skipped:
        click.echo(f"left out: {line}")
    click.echo(
        f"{len(added)} source(s) added, {len(skipped)} already present"
        + (f", {len(found.skipped)} outline(s) left out" if found.skipped else "")
    )


@sources.command("export")
@pass_ctx
def sources_export(ctx: Context) -> None:
    """Write the sources as OPML 2.0 to standard output."""
    from scraper.opml import export_opml

    with user_errors():
        settings = ctx.settings
    click.echo(export_opml(settings.sources), nl=False)


# -- status and the alert ledger ---------------------------------------------------------------


@main.command()
@pass_ctx
def status(ctx: Context) -> None:
    """Source health and the alert ledger; exit 1 when something needs attention."""
    from scraper.status import human_age, read_status
    from scraper.store import Store

    with user_errors():
        settings = ctx.settings
        store = Store.open(settings.database, readonly=True)
        try:
            report = read_status(store, settings)
        finally:
            store.close()
    now = utcnow()
    header = f"{'source':32} {'last success':>13} {'fails':>5} {'next fetch':>11}"
    click.echo(f"{header} {'last item':>10}  state")
    for s in report.sources:
        if not s.enabled:
            continue
        flag = (
            s.health_state
            if s.health_state != "ok"
            else ("failing" if s.needs_attention(report.failures_threshold) else "ok")
        )
        line = (
            f"{s.name[:32]:32} {human_age(s.last_success_at, now):>13} {s.consecutive_failures:>5}"
            f" {human_age(s.next_fetch_at, now):>11} {human_age(s.last_item_at, now):>10}  {flag}"
        )
        click.secho(line, fg=None if flag == "ok" else "red")
        if flag != "ok" and s.last_error:
            click.echo(f"{'':34}{s.last_error[:100]}")
    ledger = ", ".join(
        f"{report.ledger.get(k, 0)} {k}"
        for k in ("pending", "held", "failed", "dead", "sent", "acked")
    )
    click.echo(f"alerts: {ledger}")
    for p in report.problems:
        click.echo(
            f"  #{p.id} {p.status} to {p.target} after {p.attempts} attempt(s): {p.title[:60]}"
        )
        if p.last_error:
            click.echo(f"      {p.last_error[:140]}")
    if report.attention:
        click.secho("needs attention: " + "; ".join(report.attention), fg="red", err=True)
        sys.exit(1)


@main.group()
def alerts() -> None:
    """The alert ledger: requeue or acknowledge failed and dead alerts."""


@alerts.command("retry")
@click.argument("ids", nargs=-1, type=int)
@pass_ctx
def alerts_retry(ctx: Context, ids: tuple[int, ...]) -> None:
    """Requeue dead or failed alerts (all of them without IDs); the next run sends them."""
    from scraper.status import retry_alerts
    from scraper.store import Store

    with user_errors():
        store = Store.open(ctx.settings.database)
        try:
            count = retry_alerts(store, ids, utcnow())
        finally:
            store.close()
    click.echo(f"{count} alert(s) requeued")


@alerts.command("ack")
@click.argument("ids", nargs=-1, type=int)
@pass_ctx
def alerts_ack(ctx: Context, ids: tuple[int, ...]) -> None:
    """Acknowledge dead or failed alerts (all of them without IDs)."""
    from scraper.status import ack_alerts
    from scraper.store import Store

    with user_errors():
        store = Store.open(ctx.settings.database)
        try:
            count = ack_alerts(store, ids)
        finally:
            store.close()
    click.echo(f"{count} alert(s) acknowledged")


@main.group()
def notify() -> None:
    """Notification targets."""


@notify.command("test")
@click.option("--tag", "tags", multiple=True, help="Only targets with this tag (repeatable).")
@pass_ctx
def notify_test(ctx: Context, tags: tuple[str, ...]) -> None:
    """Send one test message to every target (or those with TAG) and report each result."""
    from scraper.messages import Notification
    from scraper.notify import Notifier

    with user_errors():
        settings = ctx.settings
    if not settings.targets:
        click.echo("no [[targets]] configured: alerts print to standard output")
        return
    notifier = Notifier(settings.targets, timezone=settings.timezone)
    chosen = notifier.targets_for(list(tags) if tags else None)
    if not chosen:
        fail(f"no target has the tag(s) {', '.join(tags)}", 2)
    message = Notification(
        "test",
        "scraper: test message",
        text=f"This is a test from scraper at {utcnow():%Y-%m-%d %H:%M} UTC. Delivery works.",
    )
    failed = 0
    for target in chosen:
        result = notifier.send(target, message)
        if result.ok:
            click.secho(f"ok      {target.name}  {notifier.redacted(target)}", fg="green")
        else:
            failed += 1
            click.secho(f"FAILED  {target.name}  {result.error}", fg="red")
    sys.exit(1 if failed else 0)


# -- serve and prune ---------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8001, show_default=True, type=click.IntRange(1, 65535), help="Port."
)
@pass_ctx
def serve(ctx: Context, host: str, port: int) -> None:
    """Start Datasette on the archive, read-only, with the shipped metadata and search."""
    from scraper.serve import LOOPBACK
    from scraper.serve import serve as run_datasette

    with user_errors():
        settings = ctx.settings
        if host not in LOOPBACK:
            click.secho(
                f"warning: listening on {host}: anyone who can reach it can read the archive",
                fg="yellow",
                err=True,
            )
        click.echo(f"Serving {settings.database} read-only at http://{host}:{port}/ (Ctrl-C stops)")
        status = run_datasette(settings.database, host=host, port=port)
    sys.exit(0 if status == 0 else 1)


@main.command()
@click.option(
    "--older-than",
    "older_than",
    metavar="AGE",
    help="Items archived longer ago than this, e.g. 180d (default: retention in scraper.toml).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; change nothing.")
@click.option("--optimize", is_flag=True, help="Then merge the full-text indexes.")
@click.option("--vacuum", is_flag=True, help="Then shrink the file (stop the daemon first).")
@pass_ctx
def prune(
    ctx: Context, older_than: str | None, dry_run: bool, optimize: bool, vacuum: bool
) -> None:
    """Drop old item bodies, keeping their identities so they never return as new."""
    from scraper import prune as retention
    from scraper.store import Store

    with user_errors():
        settings = ctx.settings
    if older_than is not None:
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            fail(f"--older-than: {exc}", 2)
    elif settings.retention is not None:
        age = settings.retention
    else:
        fail("no age given: use --older-than 180d or set retention in scraper.toml", 2)
    if age < retention.MIN_AGE:
        fail("--older-than: the age must be at least 1d", 2)
    with user_errors():
        store = Store.open(settings.database, readonly=dry_run)
        try:
            result = retention.prune(store, age, utcnow(), dry_run=dry_run)
            if not dry_run and optimize:
                retention.optimize(store)
            if not dry_run and vacuum:
                retention.vacuum(store)
        finally:
            store.close()
    before = f"{result.cutoff:%Y-%m-%d %H:%M} UTC"
    if dry_run:
        click.echo(f"{result.pruned} item(s) archived before {before} would be pruned")
        return
    click.echo(
        f"{result.pruned} item(s) archived before {before} pruned "
        "(summary and content dropped; identity, title and link kept)"
    )
