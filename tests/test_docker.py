"""The Docker image, without a Docker engine: what can be checked is checked.

The Dockerfile is read instruction by instruction: the files it copies exist in the build
context (.dockerignore applied), it runs `scraper run` as a non-root user with state/ and
rules/ as volumes, and its HEALTHCHECK works. Then the build context is installed into a fresh
virtual environment and the image's command is run there, laid out as in the image (/data),
against loopback feeds: it polls, the HEALTHCHECK says healthy (a failing source included) and
SIGTERM stops it with status 0. compose.yaml is checked for its volumes and for secrets that
come from the environment only.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import rss, write_config
from servers import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list), args
    return [str(a) for a in parsed]


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``relative`` (or a folder above it) out of the context."""
    parts = relative.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for pattern in patterns:
            plain = pattern.rstrip("/")
            if fnmatch.fnmatch(prefix, plain):
                return True
            if plain.startswith("**/") and fnmatch.fnmatch(parts[i - 1], plain[3:]):
                return True
    return False


def build_context(dest: Path) -> Path:
    """A copy of what `docker build .` would send (the repository minus .dockerignore)."""
    patterns = ignore_patterns()
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not ignored(relative, patterns):
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest


def copies() -> list[tuple[list[str], str]]:
    out = []
    for word, args in instructions():
        if word != "COPY":
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        assert "--from" not in args, "a multi-stage COPY: teach this test about it"
        out.append((parts[:-1], parts[-1]))
    return out


def env_of_image() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions():
        if word == "ENV":
            for part in shlex.split(args):
                key, _, value = part.partition("=")
                env[key] = value
    return env


def test_dockerfile_runs_the_daemon_as_a_user_with_volumes() -> None:
    found = instructions()
    words = [w for w, _ in found]
    base = dict(found)["FROM"]
    assert base.startswith("python:3.") and base.endswith("-slim")
    assert words.count("CMD") == 1 and exec_form(dict(found)["CMD"]) == ["scraper", "run"]
    user = [a for w, a in found if w == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert words.index("USER") < words.index("CMD")
    volumes = exec_form(dict(found)["VOLUME"])
    assert set(volumes) == {"/data/state", "/data/rules"}
    env = env_of_image()
    assert env["SCRAPER_CONFIG"] == "/data/scraper.toml"
    assert env["SCRAPER_HEARTBEAT"] == "/data/state/heartbeat"  # database "state/news.db"
    assert "HEALTHCHECK" in words and dict(found)["STOPSIGNAL"] == "SIGTERM"


def test_every_copied_file_is_in_the_build_context() -> None:
    patterns = ignore_patterns()
    for sources, _ in copies():
        for source in sources:
            if "*" in source:  # optional (README.md* while there is no README yet)
                continue
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such file in the repository"
            assert not ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"
    assert ignored("state/news.db", patterns) and ignored(".env", patterns)
    assert ignored("scraper/__pycache__/x.pyc", patterns)
    assert not ignored("scraper/daemon.py", patterns)


def healthcheck() -> list[str]:
    args = dict(instructions())["HEALTHCHECK"]
    assert "--interval=" in args and "--start-period=" in args
    command = args[args.index("CMD") + 3 :].strip()
    argv = exec_form(command)
    assert argv[0] == "python"
    return argv


def run_healthcheck(python: str, heartbeat: Path) -> int:
    argv = [python, *healthcheck()[1:]]
    env = {**os.environ, "SCRAPER_HEARTBEAT": str(heartbeat)}
    return subprocess.run(argv, env=env, timeout=30, capture_output=True).returncode


def test_healthcheck_reads_the_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    assert run_healthcheck(sys.executable, beat) == 1  # no daemon yet
    beat.write_text("{}")
    assert run_healthcheck(sys.executable, beat) == 0
    old = time.time() - 600
    os.utime(beat, (old, old))
    assert run_healthcheck(sys.executable, beat) == 1  # stopped making progress


def test_compose_example() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["scraper"]
    assert service["build"] == "."
    assert service.get("command") in (None, ["scraper", "run"])
    mounts = {v.split(":")[1] for v in service["volumes"]}
    assert {"/data/state", "/data/rules", "/data/scraper.toml"} <= mounts
    for name, value in service["environment"].items():  # secrets: from the environment only
        assert str(value).startswith("${") and str(value).endswith("}"), name


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtual environment with the build context installed the way the image does it
    (`pip install .`). Its dependencies come from this environment (a .pth line), so no index
    is needed for them; pip may still need one for the build backend."""
    base = tmp_path_factory.mktemp("image")
    context = build_context(base / "context")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if install.returncode != 0:
        pytest.skip(f"cannot build the package here (no package index?): {install.stderr[-500:]}")
    yield venv


def test_the_image_command_works_in_a_fresh_venv(
    fresh_venv: Path, tmp_path: Path, http_server: LoopbackServer
) -> None:
    python = fresh_venv / "bin" / "python"
    where = subprocess.run(
        [python, "-c", "import scraper; print(scraper.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(fresh_venv)), where  # the installed copy, not the checkout

    # /data as the image lays it out: scraper.toml, rules/ (the shipped ones), state/.
    data = tmp_path / "data"
    shutil.copytree(ROOT / "rules", data / "rules")
    feed = http_server.route(
        "/feed.xml",
        rss([{"title": "Japan and EU sign pact", "link": "https://e/1", "guid": "1"}]),
        content_type="application/rss+xml",
    )
    config = write_config(
        data,
        [
            {"name": "Wire", "url": feed, "interval": "1s", "jitter": "0%"},
            {"name": "Broken", "url": http_server.url("/gone"), "interval": "1s"},
        ],
    )
    (data / "state").mkdir()
    image_env = env_of_image()
    env = {
        **os.environ,
        "PATH": f"{fresh_venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "SCRAPER_CONFIG": str(config),
        "SCRAPER_LOG_FORMAT": image_env["SCRAPER_LOG_FORMAT"],
    }
    argv = exec_form(dict(instructions())["CMD"])
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [str(fresh_venv / "bin" / argv[0]), *argv[1:]], cwd=data, env=env, stdout=log, stderr=log
    )
    try:
        heartbeat = data / "state" / "heartbeat"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            failing = len(http_server.requests_to("/gone")) >= 1
            if heartbeat.exists() and len(http_server.requests_to("/feed.xml")) >= 2 and failing:
                break
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            time.sleep(0.05)
        else:
            raise AssertionError((tmp_path / "daemon.log").read_text())
        assert run_healthcheck(str(python), heartbeat) == 0  # a failing source: still healthy
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert "event=poll source=Wire status=200" in text  # key=value lines, as in the image
    assert "event=poll source=Broken status=404" in text
