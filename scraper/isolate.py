"""Parsing (and matching) in worker processes, with a time limit per document.

A parser holds the GIL (lxml, regexes), so a pathological document would stall every fetch
thread and no thread-based timeout could stop it. ``ParserPool`` keeps a few persistent worker
processes (started with forkserver, or spawn where forkserver is missing: both are safe in a
threaded program, unlike fork), hands each document to an idle one, and kills and replaces a
worker that overruns its time limit or dies. ``parse`` never raises.

Given the rules (:meth:`ParserPool.set_rules`), the workers also match every parsed item and
return the matches with the items (``ParsedFeed.matches``): matching then runs on the workers'
cores instead of the writer's. Each worker compiles the rules once per version; a new version
travels with the next document a worker gets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, ClassVar

from scraper.models import HtmlSelectors, ParsedFeed, Rule

__all__ = ["ParserPool"]

# TEST ONLY: content types that make a worker misbehave, honoured only by a pool whose class
# sets ``_test_hooks = True`` (tests/test_isolate.py subclasses ParserPool for that).
TEST_HANG = "x-scraper-test/hang"
TEST_CRASH = "x-scraper-test/crash"

RulesPayload = tuple[tuple[Rule, ...], dict[str, tuple[str, ...]]]
# body, url, content_type, selectors, (source name, source tags), rules version, rules payload
_Request = tuple[
    bytes,
    str,
    str | None,
    HtmlSelectors | None,
    tuple[str, tuple[str, ...]] | None,
    int,
    RulesPayload | None,
]


def _match_all(matcher: Any, parsed: ParsedFeed, source: tuple[str, tuple[str, ...]]) -> ParsedFeed:
    name, tags = source
    found = tuple(
        tuple(matcher.match(item.fields(), source=name, source_tags=tags)) for item in parsed.items
    )
    return dataclasses.replace(parsed, matches=found)


def _worker_main(conn: Connection, test_hooks: bool) -> None:
    """A worker's loop: receive a document, send back its ParsedFeed; stop on None or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from scraper.parse import parse_document

    matcher: Any = None
    while True:
        try:
            request: _Request | None = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        body, url, content_type, selectors, source, _version, rules = request
        if rules is not None:
            from scraper.rules import Matcher

            matcher = Matcher.compile(rules[0], rules[1])
        if test_hooks and content_type == TEST_HANG:
            while True:
                time.sleep(3600)
        if test_hooks and content_type == TEST_CRASH:
            os._exit(3)
        result = parse_document(body, url=url, content_type=content_type, selectors=selectors)
        if matcher is not None and source is not None and result.items:
            result = _match_all(matcher, result, source)
        try:
            conn.send(result)
        except (EOFError, OSError):
            return


class _Worker:
    __slots__ = ("conn", "process", "rules_version")

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.rules_version = 0  # the rules it has compiled (0: none)


class ParserPool:
    """``parse_document`` in ``workers`` persistent processes, at most ``timeout`` seconds per
    document. Thread-safe: callers wait for an idle worker. Use as a context manager, or call
    ``close()``; workers start on first use."""

    _test_hooks: ClassVar[bool] = False  # TEST ONLY, see TEST_HANG

    def __init__(self, workers: int = 2, timeout: float = 10.0) -> None:
        if workers < 1:
            raise ValueError("a ParserPool needs at least one worker")
        self._timeout = timeout
        method = (
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        self._ctx: Any = multiprocessing.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that has already imported the parser (cheap restarts),
            # and not the caller's __main__ (the default preload).
            self._ctx.set_forkserver_preload(["scraper.parse"])
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(workers):
            self._idle.put(None)  # a slot; its process starts when first needed
        self._size = workers
        self._closed = False
        self._lock = threading.Lock()
        self._rules: RulesPayload | None = None
        self._rules_version = 0

    def set_rules(self, rules: tuple[Rule, ...], aliases: dict[str, tuple[str, ...]]) -> None:
        """Have the workers match every parsed item against these rules from now on."""
        with self._lock:
            self._rules = (tuple(rules), dict(aliases))
            self._rules_version += 1

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main, args=(child, type(self)._test_hooks), daemon=True
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    @staticmethod
    def _stop(worker: _Worker, *, kill: bool) -> int | None:
        """End a worker (kill it, or ask it to finish) and return its exit code."""
        if kill:
            worker.process.kill()
        else:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
        worker.process.join(timeout=None if kill else 2.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
        return worker.process.exitcode

    def parse(
        self,
        body: bytes,
        *,
        url: str,
        content_type: str | None = None,
        selectors: HtmlSelectors | None = None,
        source: tuple[str, tuple[str, ...]] | None = None,
    ) -> ParsedFeed:
        """Parse one document in a worker; a timeout or a crash becomes an error ParsedFeed.
        With rules set and ``source`` given (name, tags), the items come back matched."""
        if self._closed:
            return ParsedFeed(items=(), error="parser pool is closed")
        worker = self._idle.get()
        try:
            if self._closed:
                return ParsedFeed(items=(), error="parser pool is closed")
            with self._lock:
                version, rules = self._rules_version, self._rules

            def request(w: _Worker) -> _Request:
                payload = rules if w.rules_version != version else None
                w.rules_version = version
                return (body, url, content_type, selectors, source, version, payload)

            try:
                if worker is None:
                    worker = self._start()
                try:
                    worker.conn.send(request(worker))
                except (OSError, ValueError):  # it died while idle: one fresh try
                    self._stop(worker, kill=True)
                    worker = self._start()
                    worker.conn.send(request(worker))
            except Exception as exc:  # cannot start a process or pickle the request
                if worker is not None:
                    self._stop(worker, kill=True)
                worker = None
                return ParsedFeed(items=(), error=f"parser process unavailable: {exc}")
            if not worker.conn.poll(self._timeout):
                self._stop(worker, kill=True)
                worker = None
                return ParsedFeed(items=(), error=f"parse timed out after {self._timeout:g}s")
            try:
                result = worker.conn.recv()
            except (EOFError, OSError):
                code = self._stop(worker, kill=True)
                worker = None
                return ParsedFeed(items=(), error=f"parser process died (exit code {code})")
            if isinstance(result, ParsedFeed):
                return result
            return ParsedFeed(items=(), error="parser process sent an unexpected reply")
        finally:
            self._idle.put(worker)  # None: the slot starts a fresh process on next use

    def close(self) -> None:
        """Stop every worker, waiting for documents in progress (up to the time limit)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in range(self._size):
            try:
                worker = self._idle.get(timeout=self._timeout + 5.0)
            except queue.Empty:
                break  # a caller still holds it; its daemon process dies with us
            if worker is not None:
                self._stop(worker, kill=False)
        for _ in range(self._size):
            self._idle.put(None)  # wakes callers still waiting: they see the pool closed
