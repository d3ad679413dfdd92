"""`scraper serve`: Datasette on the archive, read-only, with the shipped metadata and plugin.

Datasette runs as a child process (``python -m datasette serve``) on the database file as it
is: not immutable (the scraper keeps writing; WAL lets readers and the writer work at once).
It cannot write: Datasette opens mutable files with ``mode=ro`` for every query, the shipped
metadata defines no writable canned query, and the shipped plugin sets ``PRAGMA query_only``
on every connection to the archive (so even a write-capable plugin fails). Queries stop after
``sql_time_limit_ms``; the server binds to loopback unless told otherwise.

Before starting, the archive is opened once for writing: the schema is brought up to date,
the search indexes catch up, and the views below are (re)created.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from scraper import search
from scraper.errors import ScraperError
from scraper.store import Store

DATA = Path(__file__).resolve().parent / "data"
METADATA = DATA / "metadata.yaml"
PLUGINS = DATA / "plugins"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
SQL_TIME_LIMIT_MS = 3000
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_TEMPLATE_DB = "news"  # the database's key in metadata.yaml


class ServeError(ScraperError):
    """Datasette could not be started, or stopped answering."""


def ensure_views(store: Store) -> None:
    """Create the views in :data:`VIEWS`, or replace those whose definition changed (the
    store's migration does this too, so any SQLite client has them)."""
    with store.transaction():
        store.apply_views()


def prepare(database: Path) -> None:
    """Bring the archive up to date for serving: schema, search indexes, views."""
    store = Store.open(database)  # migrates and indexes
    try:
        while True:  # a first indexing of a large archive takes several batches
            with store.transaction():
                if not search.index_pending(store.conn):
                    break
        ensure_views(store)
    finally:
        store.close()


def load_metadata(database: Path) -> dict[str, Any]:
    """The shipped metadata with its database key set to the name Datasette gives
    ``database`` (the file's stem)."""
    metadata: dict[str, Any] = yaml.safe_load(METADATA.read_text(encoding="utf-8"))
    name = database.stem
    metadata["databases"] = {name: metadata["databases"][_TEMPLATE_DB]}
    if "description_html" in metadata:
        route = f'href="/{name}/'
        metadata["description_html"] = metadata["description_html"].replace(
            f'href="/{_TEMPLATE_DB}/', route
        )
    return metadata


def datasette_command(
    database: Path,
    metadata: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    sql_time_limit_ms: int = SQL_TIME_LIMIT_MS,
) -> list[str]:
    """The command line that starts Datasette on ``database`` (read-only, not immutable)."""
    return [
        sys.executable,
        "-m",
        "datasette",
        "serve",
        str(database),
        "--host",
        host,
        "--port",
        str(port),
        "--metadata",
        str(metadata),
        "--plugins-dir",
        str(PLUGINS),
        "--setting",
        "sql_time_limit_ms",
        str(sql_time_limit_ms),
        "--setting",
        "suggest_facets",
        "off",  # suggestions run a query per column: slow on a large archive
    ]


class Server:
    """A running Datasette child process. Use as a context manager, or call :meth:`stop`."""

    def __init__(
        self, process: subprocess.Popen[bytes], url: str, workdir: tempfile.TemporaryDirectory[str]
    ) -> None:
        self.process = process
        self.url = url
        self._workdir = workdir

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until Datasette answers ``/-/versions.json``."""
        deadline = time.monotonic() + timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise ServeError(f"datasette exited with status {self.process.returncode}")
            try:
                with opener.open(f"{self.url}-/versions.json", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServeError(f"datasette did not answer at {self.url} in {timeout:.0f}s")
            time.sleep(0.1)

    def wait(self) -> int:
        """Wait for Datasette to exit; return its exit status (0 after Ctrl-C)."""
        try:
            return self.process.wait()
        except KeyboardInterrupt:  # the child had the SIGINT too: let it finish, or stop it
            self.stop()
            return 0
        finally:
            self._workdir.cleanup()

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._workdir.cleanup()
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start(
    database: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    sql_time_limit_ms: int = SQL_TIME_LIMIT_MS,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
    env: Mapping[str, str] | None = None,
) -> Server:
    """Prepare the archive and start Datasette on it; returns at once (see
    :meth:`Server.wait_ready`)."""
    if not database.exists():
        raise ServeError(f"{database}: no archive yet (run `scraper run --once` first)")
    prepare(database)
    workdir = tempfile.TemporaryDirectory(prefix="scraper-serve-")
    metadata = Path(workdir.name) / "metadata.json"
    metadata.write_text(json.dumps(load_metadata(database), ensure_ascii=False), "utf-8")
    command = datasette_command(
        database, metadata, host=host, port=port, sql_time_limit_ms=sql_time_limit_ms
    )
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        workdir.cleanup()
        raise ServeError(f"cannot start datasette: {exc}") from exc
    shown = f"[{host}]" if ":" in host else host
    return Server(process, f"http://{shown}:{port}/", workdir)


def serve(database: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Run Datasette in the foreground until it exits or Ctrl-C; return its exit status."""
    return start(database, host=host, port=port).wait()
