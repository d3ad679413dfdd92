"""Benchmark (not a test): a cold and a warm `run --once` over a local feed farm.

    python bench/bench_pipeline.py [--feeds 1000] [--items 40] [--rules rules]

Starts bench/farm.py in its own process, writes a throw-away scraper.toml with one source per
farm feed, then times a cold pass (empty archive: everything new) and a warm pass (nothing
changed: every feed answers 304). Prints feeds/s, items/s and the peak RSS of the scraper's
process tree (the parser workers included), sampled every 20 ms.

Targets on the 2-core reference machine: 1,000 feeds x 40 items cold <= 8 s, warm <= 1.5 s,
peak RSS <= 300 MB. ``BENCH_CONCURRENCY`` overrides the config's concurrency (default 16).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
sys.path.insert(0, str(ROOT))

from scraper.app import run_once  # noqa: E402
from scraper.settings import load_settings  # noqa: E402
from scraper.store import Store  # noqa: E402


class PeakRss:
    """Samples the RSS of this process and its children (the parser pool), not the farm."""

    def __init__(self, exclude: int | None = None) -> None:
        self.exclude = exclude  # the feed farm is our child too, but not the scraper's
        self.peak = 0
        self.parts: list[int] = []  # at the peak: this process, then each child
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.me = psutil.Process()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            total = 0
            parts: list[int] = []
            try:
                total = self.me.memory_info().rss
                parts.append(total)
                for child in self.me.children(recursive=True):
                    if child.pid == self.exclude:
                        continue
                    with contextlib.suppress(psutil.Error):
                        rss = child.memory_info().rss
                        total += rss
                        parts.append(rss)
            except psutil.Error:
                pass
            if total > self.peak:
                self.peak, self.parts = total, parts

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_config(folder: Path, port: int, feeds: int, rules: Path | None) -> Path:
    rules_dir = folder / "rules"
    if rules is not None and rules.exists():
        shutil.copytree(rules, rules_dir)
    else:
        rules_dir.mkdir()
    lines = [
        'database = "news.db"',
        'rules = "rules"',
        'user_agent = "scraper-bench/0.1 (+https://example.invalid/scraper)"',
        'timezone = "Asia/Tokyo"',
        f"concurrency = {CONCURRENCY}",
        "per_host = 16  # the farm is one host; a real deployment spreads over many",
        "",
        "[defaults]",
        'interval = "15m"',
        'timeout = "30s"',
        "",
    ]
    for i in range(feeds):
        lines += [
            "[[sources]]",
            f'name = "farm-{i}"',
            f'url = "http://127.0.0.1:{port}/feed/{i}.xml"',
            'tags = ["farm"]',
            "",
        ]
    path = folder / "scraper.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def start_farm(feeds: int, items: int) -> tuple[subprocess.Popen[str], int]:
    farm = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "farm.py"),
            "--feeds",
            str(feeds),
            "--items",
            str(items),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert farm.stdout is not None
    line = farm.stdout.readline().split()
    if not line or line[0] != "ready":
        farm.kill()
        raise SystemExit("the feed farm did not start")
    return farm, int(line[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules")
    args = parser.parse_args()

    farm, port = start_farm(args.feeds, args.items)
    folder = Path(tempfile.mkdtemp(prefix="scraper-bench-"))
    try:
        config = write_config(folder, port, args.feeds, args.rules)
        settings = load_settings(config, os.environ)
        print(
            f"{args.feeds} feeds x {args.items} items from 127.0.0.1:{port}, cpus={os.cpu_count()}"
        )
        for label in ("cold", "warm"):
            with PeakRss(exclude=farm.pid) as rss:
                started = time.perf_counter()
                summary = run_once(settings)
                elapsed = time.perf_counter() - started
            failed = len(summary.failed)
            print(
                f"{label}: {elapsed:6.2f} s  {args.feeds / elapsed:7.0f} feeds/s  "
                f"{summary.items_new / elapsed:8.0f} items/s  new={summary.items_new} "
                f"matches={summary.matches} failed={failed}  peak RSS {rss.peak / 2**20:.0f} MB"
                f" ({' + '.join(f'{p / 2**20:.0f}' for p in rss.parts)})"
            )
            if failed:
                print(
                    "  e.g.",
                    summary.failed[0].source,
                    summary.failed[0].status,
                    summary.failed[0].error,
                )
        with Store.open(settings.database) as store:
            print(f"archive: {store.count('items')} items, {store.count('fetches')} fetch rows")
    finally:
        farm.terminate()
        farm.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
