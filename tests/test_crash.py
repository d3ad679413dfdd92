"""Crash safety of `scraper run --once`: kill -9 at random moments, restart, lose nothing.

The claim under test (SPEC, Alerts): "A crash never loses an alert; at worst one is sent
twice", and the outbox design in scraper/alerts.py and scraper/delivery.py: items, matches and
ledger rows commit together, a row is marked sent in its own transaction after its one send,
so the only thing a kill can do to delivery is re-send the message whose send it interrupted.

Everything is real: a loopback feed server (in this process) serves FEEDS feeds that grow
every round, a JSON webhook receiver (Apprise ``json://``) stands for two targets, and each
attempt is a ``python -m scraper --config CFG run --once`` child process. An attempt is killed
with SIGKILL at a random moment: a phase is picked for it (fetch, write or send, six kills
each in every twenty, and two at startup), the test waits for that phase's anchor event (the
first feed request; the write lock taken after the k-th feed answer; the first webhook post
of the attempt; the spawn) and then a seeded random delay. The feed server drips its answers
and the webhook holds each answer a little after recording it, so the phases last long
enough to be hit, and the dangerous window (delivered, not yet marked sent) is wide. The
phase the kill really landed in is observed at the kill instant: a webhook post seen in this
attempt means "send"; no feed request yet, "startup"; the child holding SQLite's WAL write
lock, "write"; a feed still being served, "fetch". After KILLS kills, one last attempt runs
to the end. A post whose body a kill cut short is not received (the webhook answers 400).

Then, for every story (an original item and its syndicated copies) and every target its rules
route to: the webhook received it at least once, and exactly once more for every kill that
interrupted its send. "Interrupted its send" is proven per kill, not assumed: the webhook had
recorded the post, it was the killed child's last post (a child sends one message at a time),
and right after the kill the ledger row for that story and target was not 'sent'. Finally
the archive is consistent: integrity and foreign keys, every item has a story, every
published item is archived once, copies share their original's story, every alert is sent.

CRASH_SEED=<n> in the environment replays another sequence (the default is fixed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, rss, write_config
from notify_servers import Hook, WebhookServer
from servers import LoopbackServer, Request, Route

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="reads SQLite's lock with Linux's struct flock layout"
)

SEED = int(os.environ.get("CRASH_SEED", "20241101"))
KILLS = 20
MAX_ATTEMPTS = 40  # attempts that finish before their kill moment do not count as kills
BASE_ITEMS = 24  # per feed in the first round
ROUND_ITEMS = 2  # new items per feed in every later round
COPY_EVERY = 3  # every 3rd story is also carried by the next feed (a syndicated copy)
# Feed f starts answering FEED_DELAYS[f] seconds after its request and drips its body over
# FEED_DRIP seconds. Feed 0 comes at once, so the parser processes have started (~0.5 s)
# before the others arrive one by one: each poll is then written and committed on its own,
# while the next feeds are still being fetched, and a kill can leave some polls committed.
FEED_DELAYS = (0.0, 0.55, 0.7, 0.85, 1.0)
FEED_DRIP = 0.1
FEEDS = len(FEED_DELAYS)
HOOK_DELAY = 0.01  # the webhook holds each answer this long after recording it
STARTUP_SPAN = 0.5  # kills aimed at startup land this long at most after the spawn
WRITE_SPAN = 0.008  # kills aimed at a write land this long at most after it began (a
# later round's poll takes 7-20 ms to write, the first round's 20-80 ms)
SEND_SPAN = 0.6  # kills aimed at sending land this long at most after the first post
ANCHOR_TIMEOUT = 20.0  # an anchor event that never comes is a failure of the child

TARGETS = {"/a": "a", "/b": "b"}  # webhook path -> target name
RULES = {
    "japan": "name: Japan\nquery: Japan\n",  # every target
    "korea": "name: North Korea\nquery: '\"North Korea\"'\nnotify: [b]\n",  # target b only
}
# kind of story -> (title template, the targets its rules route to)
KINDS: list[tuple[str, frozenset[str]]] = [
    ("Japan and EU open talks on a trade pact", frozenset({"a", "b"})),
    ("North Korea test-fires a ballistic missile", frozenset({"b"})),
    ("Japan protests after North Korea fires a missile", frozenset({"a", "b"})),
    ("Typhoon season ends early in the Pacific", frozenset()),
]
TOKEN = re.compile(r"\bR\d+F\d+N\d+\b")
SYLLABLES = "ka mi to ra se no ri ku ha yo ne su ta ma ki ro".split()


def pseudo_words(serial: int, count: int = 4) -> str:
    """``count`` made-up words unique to this story: two stories of one template then share
    under half their title words, far from any near-duplicate threshold."""
    words = []
    for i in range(count):
        n = serial * count + i
        words.append("".join(SYLLABLES[(n >> shift) % 16] for shift in (0, 4, 8)))
    return " ".join(words)


# --- the world: feeds that grow, and what they should come to -----------------------------


@dataclass(frozen=True)
class Story:
    token: str  # in every copy's title: how a received message is traced back to its story
    title: str
    link: str
    published: datetime
    targets: frozenset[str]
    copy: str | None  # None, "url" (same link) or "title" (same title + a publisher)


@dataclass
class World:
    stories: list[Story] = field(default_factory=list)
    feeds: list[list[dict[str, Any]]] = field(default_factory=lambda: [[] for _ in range(FEEDS)])

    def publish_round(self, r: int, now: datetime) -> None:
        """Append round ``r``'s items (and copies) to every feed."""
        count = BASE_ITEMS if r == 0 else ROUND_ITEMS
        for f in range(FEEDS):
            for n in range(count):
                serial = len(self.stories)
                template, targets = KINDS[serial % len(KINDS)]
                token = f"R{r}F{f}N{n}"
                copy = None
                if serial % COPY_EVERY == 1:
                    copy = "url" if serial % (2 * COPY_EVERY) == 1 else "title"
                story = Story(
                    token,
                    f"{template}: {pseudo_words(serial)} ({token})",
                    f"https://wire{f}.example/{r}/{n}",
                    now - timedelta(minutes=3 * (count - n)),
                    targets,
                    copy,
                )
                self.stories.append(story)
                self.feeds[f].append(self._item(story, f, story.title, story.link))
                if copy:
                    other = (f + 1) % FEEDS
                    title = story.title if copy == "url" else f"{story.title} - Kyodo News"
                    link = story.link if copy == "url" else f"https://kyodo.example/{token}"
                    self.feeds[other].append(self._item(story, other, title, link, 5))

    @staticmethod
    def _item(story: Story, f: int, title: str, link: str, later: int = 0) -> dict[str, Any]:
        body = (
            f"{title}. The report, filed by a wire correspondent, runs to a few paragraphs"
            " so that each poll writes some text: officials spoke, analysts commented, markets"
            " moved a little, and the story was updated twice during the afternoon."
        )
        return {
            "title": title,
            "link": link,
            "guid": f"feed{f}:{story.token}",
            "description": body,
            "date": story.published + timedelta(minutes=later),
        }

    def document(self, f: int, now: datetime) -> bytes:
        return rss(reversed(self.feeds[f]), title=f"Wire {f}", now=now)

    @property
    def items(self) -> int:
        return sum(len(items) for items in self.feeds)

    def expected(self) -> Counter[tuple[str, str]]:
        return Counter((s.token, t) for s in self.stories for t in s.targets)


class FeedServer(LoopbackServer):
    """LoopbackServer that also notes when each answer has been written completely."""

    def __init__(self) -> None:
        super().__init__()
        self.completed: list[Request] = []  # requests whose answer was written in full

    def _respond(self, handler: Any, request: Request, route: Route) -> None:
        super()._respond(handler, request, route)
        with self._lock:
            self.completed.append(request)
            self._lock.notify_all()

    def completed_since(self, since: float) -> int:
        """Answers written in full to requests that arrived after ``since`` (monotonic): a
        killed child's request that the server goes on answering does not count later."""
        with self._lock:
            return sum(1 for r in self.completed if r.at >= since)

    def wait_completed(self, count: int, since: float, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(
                lambda: sum(1 for r in self.completed if r.at >= since) >= count, timeout
            )


def serve_round(server: FeedServer, world: World, r: int) -> None:
    now = datetime.now(UTC)
    for f in range(FEEDS):
        body = world.document(f, now)
        server.route(
            f"/wire{f}.xml",
            body,
            content_type="application/rss+xml",
            etag=f'"r{r}"',
            delay=FEED_DELAYS[f],
            drip=FEED_DRIP / 10,
            drip_size=len(body) // 10 + 1,
        )


# --- observing the child ---------------------------------------------------------------------

_WAL_WRITE_LOCK = 120  # the byte of the -shm file that SQLite's WAL writer lock covers (unix)


def write_locked(db: Path) -> bool:
    """Whether another process holds the database's WAL write lock (F_GETLK: looks, takes
    nothing). Linux struct flock: short, short, off_t, off_t, pid_t (padded to 32 bytes)."""
    try:
        fd = os.open(f"{db}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _WAL_WRITE_LOCK, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        lock_type: int = struct.unpack("hhqqi4x", answer)[0]
        return lock_type != fcntl.F_UNLCK
    finally:
        os.close(fd)


@dataclass
class Attempt:
    number: int
    aim: str  # the phase the kill was aimed at ("" for the final attempt, never killed)
    delay: float = 0.0  # the random part of the kill moment, after the aim's anchor event
    phase: str = ""  # where the kill landed (see Harness.phase), or "exit" (not killed)
    elapsed: float = 0.0  # seconds from spawn to kill (or exit)
    committed: int = 0  # feeds whose poll of this round was committed when it ended
    sent: list[Hook] = field(default_factory=list)  # posts the webhook recorded from it
    interrupted: tuple[str, str] | None = None  # (story token, target) whose send it cut
    returncode: int | None = None


def token_of(hook: Hook) -> str:
    title = hook.body.get("title", "") if isinstance(hook.body, dict) else ""
    found = TOKEN.findall(title)
    assert len(found) == 1, f"a message that is not one story: {hook.body!r}"
    return str(found[0])


def ledger_status(db: Path, token: str, target: str) -> list[str]:
    """Statuses of the alert rows for the story whose items carry ``token``, to ``target``."""
    with closing_db(db) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT status FROM alerts WHERE target = ? AND story_id IN"
                " (SELECT story_id FROM items WHERE title LIKE ?)",
                (target, f"%({token})%"),
            )
        ]


class closing_db:
    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, timeout=15)

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


# --- the test --------------------------------------------------------------------------------


@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    with WebhookServer(delay=HOOK_DELAY) as server:
        yield server


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    server = FeedServer()
    server.start()
    yield server
    server.stop()


class Harness:
    def __init__(self, tmp_path: Path, feeds: FeedServer, hook: WebhookServer) -> None:
        self.tmp = tmp_path
        self.feeds = feeds
        self.hook = hook
        self.world = World()
        self.rng = random.Random(SEED)
        sources = [
            {"name": f"Wire {f}", "url": feeds.url(f"/wire{f}.xml"), "jitter": "0%"}
            for f in range(FEEDS)
        ]
        targets = [
            {"name": name, "url": hook.apprise_url(path), "tags": [name]}
            for path, name in TARGETS.items()
        ]
        self.config = write_config(
            tmp_path,
            sources,
            rules=RULES,
            targets=targets,
            top={"per_host": FEEDS},
            tables={"alerts": {"backlog": True, "rate_limit": "off", "max_age": "2d"}},
        )
        self.db = tmp_path / "state" / "news.db"
        self.env = {k: v for k, v in os.environ.items() if k != "SCRAPER_CONFIG"}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p
        )

    def spawn(self, n: int) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"attempt-{n:02d}.log").open("wb")
        with log:
            return subprocess.Popen(
                [sys.executable, "-m", "scraper", "--config", str(self.config), "run", "--once"],
                cwd=self.tmp,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its parser processes share its process group
            )

    def wait_anchor(self, child: subprocess.Popen[bytes], reached: Any) -> bool:
        """Wait until ``reached(slice)`` says the anchor event happened (it blocks on the
        server's condition for at most ``slice`` seconds), or the child exits first."""
        deadline = time.monotonic() + ANCHOR_TIMEOUT
        while not reached(0.05):
            if child.poll() is not None:
                return False
            assert time.monotonic() < deadline, "the child made no progress"
        return True

    def wait_write_lock(self, child: subprocess.Popen[bytes]) -> bool:
        """Wait until the child takes the database's write lock (there is no event for that:
        the lock is looked at every half millisecond), or exits first."""
        deadline = time.monotonic() + ANCHOR_TIMEOUT
        while not write_locked(self.db):
            if child.poll() is not None:
                return False
            assert time.monotonic() < deadline, "the child never wrote"
            time.sleep(0.0005)
        return True

    def attempt(self, n: int, aim: str) -> Attempt:
        """Publish round ``n``, run the child, kill it at a random moment of the ``aim``
        phase (no kill when ``aim`` is empty), and look at what it left behind."""
        self.world.publish_round(n, datetime.now(UTC))
        serve_round(self.feeds, self.world, n)
        hooks0 = len(self.hook.received)
        requests0 = len(self.feeds.requests)
        run = Attempt(n, aim)
        started = time.monotonic()
        child = self.spawn(n)
        try:
            if aim == "startup":  # opening (on the first attempt: creating) the archive
                run.delay = self.rng.uniform(0, STARTUP_SPAN)
                anchored = True
            elif aim == "fetch":  # from the first feed request until the last answer is out
                run.delay = self.rng.uniform(0, max(FEED_DELAYS) + FEED_DRIP)
                anchored = self.wait_anchor(
                    child, lambda s: self.feeds.wait_for_requests(requests0 + 1, s)
                )
            elif aim == "write":  # the write that follows the k-th feed's answer
                k = self.rng.randint(1, FEEDS)
                run.delay = self.rng.uniform(0, WRITE_SPAN)
                anchored = self.wait_anchor(
                    child, lambda s: self.feeds.wait_completed(k, started, s)
                ) and self.wait_write_lock(child)
            elif aim == "send":  # from the first post on
                run.delay = self.rng.uniform(0, SEND_SPAN)
                anchored = self.wait_anchor(child, lambda s: self.hook.wait_for(hooks0 + 1, s))
            else:
                anchored = False
            if anchored:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(run.delay)  # the random moment (the child may finish first)
            if aim and child.poll() is None:
                run.phase = self.phase(started, hooks0)
                os.kill(child.pid, signal.SIGKILL)
            run.returncode = child.wait(60)
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
            with contextlib.suppress(ProcessLookupError):  # its parser processes, if left
                os.killpg(child.pid, signal.SIGKILL)
        run.elapsed = time.monotonic() - started
        self.hook.drain()  # every post the child made is now recorded (or was never made)
        run.sent = self.hook.received[hooks0:]
        with closing_db(self.db) as db:
            assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
            (run.committed,) = db.execute(
                "SELECT count(*) FROM sources WHERE etag = ?", (f'"r{n}"',)
            ).fetchone()
        if not run.phase:
            run.phase = "exit"
        elif run.phase == "between":  # parsing, or the pass is over and delivery not begun
            run.phase = "deliver-prep" if run.committed == FEEDS else "parse"
        if run.phase != "exit" and run.sent:
            # A child sends one message at a time: only its last post can be unacknowledged.
            last = run.sent[-1]
            token, target = token_of(last), TARGETS[last.path]
            statuses = ledger_status(self.db, token, target)
            assert len(statuses) == 1, (token, target, statuses)
            if statuses[0] != "sent":
                run.interrupted = (token, target)
        return run

    def requests(self, since: float) -> int:
        return sum(1 for r in self.feeds.requests if r.at >= since)

    def phase(self, started: float, hooks0: int) -> str:
        """Where the child is now, seen from outside (just before the kill): the webhook
        has had a post from it (send); no feed request yet (startup); it holds the write
        lock (write); a feed answer is still going out (fetch); else between those."""
        if len(self.hook.received) > hooks0:
            return "send"
        if self.requests(started) == 0:
            return "startup"
        if write_locked(self.db):
            return "write"
        if self.feeds.completed_since(started) < FEEDS:
            return "fetch"
        return "between"


def test_kill_9_at_random_moments_loses_no_alert(
    tmp_path: Path, feeds: FeedServer, hook: WebhookServer
) -> None:
    h = Harness(tmp_path, feeds, hook)
    aims: list[str] = []
    while len(aims) < MAX_ATTEMPTS:  # in each block of 20: 6 per phase, 2 at startup
        block = ["fetch", "write", "send"] * 6 + ["startup"] * 2
        h.rng.shuffle(block)
        aims += block
    attempts: list[Attempt] = []
    kills = 0
    for n, aim in enumerate(aims[:MAX_ATTEMPTS]):
        if kills == KILLS:
            break
        run = h.attempt(n, aim)
        attempts.append(run)
        kills += run.phase != "exit"
    assert kills == KILLS, f"only {kills} of {len(attempts)} attempts could be killed"
    final = h.attempt(len(attempts), "")
    attempts.append(final)
    log = (tmp_path / f"attempt-{final.number:02d}.log").read_text()
    assert final.returncode == 0, log

    report(attempts, h)
    landed = Counter(run.phase for run in attempts)
    assert landed["fetch"] and landed["write"] and landed["send"], landed

    # Every alert arrived; each extra copy is one interrupted send, proven above.
    received = Counter((token_of(x), TARGETS[x.path]) for run in attempts for x in run.sent)
    expected = h.world.expected()
    assert hook.failed == 0
    assert set(received) == set(expected), (
        f"missing: {sorted(set(expected) - set(received))[:10]}"
        f" unexpected: {sorted(set(received) - set(expected))[:10]}"
    )
    interrupted = Counter(run.interrupted for run in attempts if run.interrupted)
    extra = {key: count - 1 for key, count in received.items() if count > 1}
    assert extra == dict(interrupted), "a duplicate without a kill inside its send"
    assert sum(extra.values()) <= sum(run.phase == "send" for run in attempts) <= KILLS

    # The archive is consistent.
    with closing_db(h.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        db.execute("INSERT INTO items_fts (items_fts) VALUES ('integrity-check')")
        items, keys = db.execute(
            "SELECT count(*), count(DISTINCT source_id || ':' || key) FROM items"
        ).fetchone()
        assert items == keys == h.world.items  # every published item once
        assert (
            db.execute(
                "SELECT count(*) FROM items i LEFT JOIN stories s ON s.id = i.story_id"
                " WHERE s.id IS NULL"
            ).fetchone()[0]
            == 0
        )
        stories = dict(
            db.execute("SELECT story_id, group_concat(title, '|') FROM items GROUP BY story_id")
        )
        by_token: dict[str, set[int]] = {}
        for story_id, titles in stories.items():
            for token in TOKEN.findall(titles):
                by_token.setdefault(token, set()).add(story_id)
        assert all(len(ids) == 1 for ids in by_token.values())  # copies joined their story
        assert len(by_token) == len(h.world.stories) == len(stories)
        statuses = Counter(row[0] for row in db.execute("SELECT status FROM alerts"))
        assert statuses == {"sent": sum(expected.values())}
        ledger = {
            (TOKEN.findall(title)[0], target)
            for title, target in db.execute(
                "SELECT i.title, a.target FROM alerts a JOIN items i ON i.id = a.item_id"
            )
        }
        assert ledger == set(expected)


def report(attempts: list[Attempt], h: Harness) -> None:
    """Print what happened (pytest -s, or shown on failure)."""
    phases = Counter(run.phase for run in attempts if run.phase != "exit")
    aimed = Counter(run.aim for run in attempts if run.phase != "exit")
    dups = sum(1 for run in attempts if run.interrupted)
    posts = sum(len(run.sent) for run in attempts)
    print(f"\ncrash test seed={SEED}: {len(attempts)} attempts, {sum(phases.values())} kills")
    print(f"  kills aimed at: {dict(aimed)}")
    print(f"  kills landed in: {dict(phases)}")
    print(
        f"  stories={len(h.world.stories)} items={h.world.items}"
        f" expected alerts={sum(h.world.expected().values())} posts received={posts}"
        f" duplicates={dups} posts cut short by a kill={h.hook.incomplete}"
    )
    for run in attempts:
        cut = f" interrupted {run.interrupted}" if run.interrupted else ""
        print(
            f"  #{run.number:02d} aim={run.aim or '-':7} +{run.delay:.3f}s"
            f" landed={run.phase:12} t={run.elapsed:5.2f}s committed={run.committed}/{FEEDS}"
            f" posts={len(run.sent):3}{cut}"
        )
