"""Tested docs: the README's two commands, every command documented, the shipped files load."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest

from scraper.cli import main
from scraper.parse import parse_document
from scraper.rules import load_rules
from scraper.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CORPUS = ROOT.parent / "shared" / "corpus"


def fenced_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"```[a-z]*\n(.*?)```", text, re.S)]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    before_guide = README.split("\n## ", 1)[0]
    blocks = fenced_blocks(before_guide)
    install_and_run, install_and_test = blocks[0], blocks[1]
    assert "\n" not in install_and_run and "\n" not in install_and_test
    assert install_and_run.endswith("scraper run --once")
    assert install_and_test.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert install_and_test in ci.splitlines()


def command_paths(group: click.Group, prefix: str = "scraper") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            paths += command_paths(command, path)
        else:
            paths.append(path)
    return paths


def test_every_command_is_documented() -> None:
    paths = command_paths(main)
    assert "scraper run" in paths and "scraper rules test" in paths
    text = re.sub(r"\s+", " ", README)
    missing = []
    for path in paths:
        # "scraper sources import" may be written "sources import" in a row about sources
        short = path.split(" ", 1)[1]
        if path not in text and f"`{short}" not in text and f"· `{short.split()[-1]}" not in text:
            missing.append(path)
    assert missing == []


def test_the_shipped_config_and_rules_load() -> None:
    settings = load_settings(ROOT / "scraper.toml", {})
    enabled = [s for s in settings.sources if s.enabled]
    assert len(enabled) >= 12
    assert any("ja" in s.tags for s in enabled)
    assert settings.targets == ()
    ruleset = load_rules(settings.rules)
    assert ruleset.errors == ()
    assert {"japan", "eu", "japan-eu-defense", "north-korea"} <= {r.id for r in ruleset.rules}


def test_the_shipped_html_source_works_on_its_capture() -> None:
    capture = CORPUS / "pages" / "listing" / "cnn-international-homepage.html"
    if not capture.exists():
        pytest.skip("corpus not found")
    settings = load_settings(ROOT / "scraper.toml", os.environ)
    (html,) = [s for s in settings.sources if s.kind == "html"]
    parsed = parse_document(capture.read_bytes(), url=html.url, selectors=html.selectors)
    assert parsed.error is None
    assert len(parsed.items) >= 10
    assert all(item.title and item.url and item.url.startswith("http") for item in parsed.items)
