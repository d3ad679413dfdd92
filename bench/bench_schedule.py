"""Benchmark (not a test): the daemon with thousands of sources, its memory in steady state.

    python bench/bench_schedule.py [--sources 5000] [--items 20] [--interval 60s]
                                   [--steady 120] [--mutate 0.02]

Starts bench/farm.py (one loopback host serving --sources feeds with ETags; --mutate of them
gain an item on each request), writes a throw-away scraper.toml with one source per feed, and
runs `scraper run` (the daemon) as a subprocess. It reports the first sweep (every source
polled once: the cold start, spread over the first minute), then --steady seconds of steady
state (each source polled every --interval): polls per second, CPU, and the RSS of the
daemon's process tree (the parser workers included), sampled every half second. Finally it
sends SIGTERM and reports how long the daemon took to stop and its exit status.

Target: 5,000 sources, steady-state RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def start_farm(feeds: int, items: int, mutate: float) -> tuple[subprocess.Popen[str], int]:
    farm = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "farm.py"),
            *("--feeds", str(feeds), "--items", str(items), "--mutate", str(mutate)),
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


def write_config(folder: Path, port: int, sources: int, interval: str, rules: Path) -> Path:
    if rules.exists():
        shutil.copytree(rules, folder / "rules")
    else:
        (folder / "rules").mkdir()
    lines = [
        'database = "state/news.db"',
        'rules = "rules"',
        'user_agent = "scraper-bench/0.1 (+https://example.invalid/scraper)"',
        'timezone = "Asia/Tokyo"',
        "concurrency = 16",
        "per_host = 16  # the farm is one host; a real deployment spreads over many",
        "",
        "[defaults]",
        f'interval = "{interval}"',
        'jitter = "10%"',
        'timeout = "30s"',
        "",
    ]
    for i in range(sources):
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


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
    return total


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of the process and its children so far."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        times = proc.cpu_times()
        total = times.user + times.system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                total += t.user + t.system
    return total


def heartbeat(path: Path) -> dict[str, int]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=5000)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--interval", default="60s")
    parser.add_argument("--steady", type=float, default=120.0, help="seconds of steady state")
    parser.add_argument("--mutate", type=float, default=0.02)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules")
    args = parser.parse_args()

    farm, port = start_farm(args.sources, args.items, args.mutate)
    folder = Path(tempfile.mkdtemp(prefix="scraper-bench-daemon-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        config = write_config(folder, port, args.sources, args.interval, args.rules)
        beat = folder / "state" / "heartbeat"
        log = (folder / "daemon.log").open("wb")
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "scraper", "--config", str(config), "run", "-q"],
            stdout=log,
            stderr=log,
            cwd=folder,
        )
        daemon = psutil.Process(proc.pid)
        print(
            f"{args.sources} sources x {args.items} items, interval {args.interval}, "
            f"farm at 127.0.0.1:{port}, cpus={os.cpu_count()}"
        )

        # The first sweep: every source polled once.
        peak = 0
        polls = 0
        while proc.poll() is None:
            time.sleep(0.5)
            peak = max(peak, tree_rss(daemon))
            polls = heartbeat(beat).get("polls", polls)
            if polls >= args.sources:
                break
        sweep = time.monotonic() - started
        print(f"first sweep: {polls} polls in {sweep:.1f} s, peak RSS {peak / 2**20:.0f} MB")

        # Steady state.
        samples: list[int] = []
        first = heartbeat(beat)
        cpu0, t0 = tree_cpu(daemon), time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < args.steady:
            time.sleep(0.5)
            samples.append(tree_rss(daemon))
        elapsed = time.monotonic() - t0
        last = heartbeat(beat)
        done = last.get("polls", 0) - first.get("polls", 0)
        cpu = (tree_cpu(daemon) - cpu0) / elapsed * 100
        mb = [s / 2**20 for s in samples] or [0.0]
        print(
            f"steady state ({elapsed:.0f} s): {done / elapsed:.1f} polls/s, CPU {cpu:.0f}%, "
            f"RSS mean {statistics.mean(mb):.0f} MB, max {max(mb):.0f} MB, last {mb[-1]:.0f} MB; "
            f"failed polls {last.get('polls_failed', 0)}, job errors {last.get('job_errors', 0)}"
        )

        with contextlib.suppress(psutil.Error):
            own = daemon.memory_info().rss
            children = daemon.children(recursive=True)
            print(
                f"  of which the daemon {own / 2**20:.0f} MB, {len(children)} parser process(es)"
                f" {(tree_rss(daemon) - own) / 2**20:.0f} MB"
            )

        stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        print(f"SIGTERM: exit {code} after {time.monotonic() - stop:.2f} s")
        log.close()
        errors = [
            line
            for line in (folder / "daemon.log").read_text(errors="replace").splitlines()
            if "level=error" in line or "level=critical" in line or "Traceback" in line
        ]
        if errors:
            print(f"{len(errors)} error line(s) in the log, e.g.: {errors[0][:300]}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        farm.terminate()
        farm.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
