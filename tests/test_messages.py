"""Messages fitted to each channel: content, escaping of hostile feed text, Telegram limits."""

from __future__ import annotations

import html.parser
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from notify_servers import TelegramParseError, telegram_html_text, utf16_len

from scraper.messages import (
    Notification,
    StoryAlert,
    cut_markup,
    format_time,
    highlight,
    render_html,
    render_markdown,
    render_telegram,
    render_text,
    safe_url,
    tg_len,
)

TZ = ZoneInfo("Asia/Tokyo")
WHEN = datetime(2024, 11, 1, 5, 30, tzinfo=UTC)
HOSTILE = ("</a><script>alert(1)</script>", "*_[", "<b>", "&amp;")
URL = "https://example.com/news/japan-eu?id=7&ref=feed"


def story(**changes: object) -> StoryAlert:
    values: dict[str, object] = {
        "title": "Japan and EU sign defense pact",
        "source": "Kyodo",
        "url": URL,
        "published_at": WHEN,
        "rules": ("Japan–EU defense partnership", "Japan watch"),
        "terms": ("Japan", "EU", "defense pact"),
        "snippet": "TOKYO — Japan and the EU agreed a defense pact on Friday; japan's envoy said.",
        "also_reported_by": ("NHK World", "Japan Today"),
    }
    values.update(changes)
    return StoryAlert(**values)  # type: ignore[arg-type]


def alert(s: StoryAlert | None = None) -> Notification:
    s = s or story()
    return Notification("story", s.title, (s,))


def hostile_story() -> StoryAlert:
    junk = " ".join(HOSTILE)
    return story(
        title=f"Japan {junk}",
        source=f"Feed {junk}",
        snippet=f"Japan said {junk} and EU {junk}",
        rules=(f"rule {junk}",),
        terms=("Japan", "EU"),
        also_reported_by=(f"Other {junk}",),
        url="https://example.com/a?x=\"'><script>&y=1",
    )


class TagCollector(html.parser.HTMLParser):
    """The elements and the text of an HTML document, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs += [v or "" for k, v in attrs if k == "href"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(doc: str) -> TagCollector:
    p = TagCollector()
    p.feed(doc)
    p.close()
    return p


# --- content ---------------------------------------------------------------------------------


def test_local_time_in_the_configured_timezone() -> None:
    assert format_time(WHEN, TZ) == "1 Nov 2024 14:30 JST"
    assert format_time(WHEN, ZoneInfo("UTC")) == "1 Nov 2024 05:30 UTC"
    assert format_time(datetime(2024, 11, 1, 5, 30), ZoneInfo("UTC")) == "1 Nov 2024 05:30 UTC"


@pytest.mark.parametrize("render", [render_text, render_markdown, render_html, render_telegram])
def test_a_story_shows_everything_the_spec_lists(render: object) -> None:
    out = render(alert(), TZ)  # type: ignore[operator]
    visible = out
    if render in (render_html, render_telegram):
        visible = "".join(parse_html(out).text)
    for expected in (
        "Japan and EU sign defense pact",
        "Kyodo",
        "1 Nov 2024 14:30 JST",
        "Japan–EU defense partnership",
        "Japan watch",
        "defense pact",
        "NHK World, Japan Today",
        "Also reported by",
    ):
        assert expected in visible.replace("\\", ""), (expected, out)
    if render is render_text:
        assert URL in out
    else:
        assert "https://example.com/news/japan-eu?id=7&" in out.replace("&amp;", "&")


def test_terms_are_emphasised_per_channel() -> None:
    n = alert()
    assert "<b>Japan</b> and the <b>EU</b> agreed a <b>defense pact</b>" in render_html(n, TZ)
    assert "<b>Japan</b> and the <b>EU</b> agreed a <b>defense pact</b>" in render_telegram(n, TZ)
    assert "**Japan** and the **EU** agreed a **defense pact**" in render_markdown(n, TZ)
    assert "<b>japan</b>&#x27;s envoy" in render_html(n, TZ)
    text = render_text(n, TZ)
    assert "Japan and the EU agreed a defense pact" in text and "*" not in text


def test_highlight_whole_words_and_cjk_substrings() -> None:
    runs = highlight("Japanese press: Japan, JAPAN's", ["Japan"])
    assert [r for r, strong in runs if strong] == ["Japan", "JAPAN"]
    runs = highlight("北朝鮮が発射 北朝鮮", ["北朝鮮"])
    assert [r for r, strong in runs if strong] == ["北朝鮮", "北朝鮮"]
    assert highlight("New York Times", ["New York", "York Times"]) == [("New York Times", True)]
    assert highlight("plain", []) == [("plain", False)]


def test_digest_lists_every_story_with_source_time_link_and_rules() -> None:
    stories = tuple(story(title=f"Story {i}", url=f"https://example.com/{i}") for i in range(3))
    n = Notification("digest", "Digest: Japan (3 stories)", stories, text="Held overnight.")
    for render in (render_text, render_markdown, render_html, render_telegram):
        out = render(n, TZ)
        assert "Digest: Japan (3 stories)" in out
        assert "Held overnight." in out.replace("\\", "")
        for i in range(3):
            assert f"Story {i}" in out and f"https://example.com/{i}" in out
        assert out.count("Kyodo · 1 Nov 2024 14:30 JST") == 3
        assert out.count("Japan–EU defense partnership") == 3


def test_health_and_test_messages_carry_their_text() -> None:
    n = Notification("health", "Kyodo is failing", text="5 failures in a row\nlast: timeout")
    for render in (render_text, render_markdown, render_html, render_telegram):
        out = render(n, TZ)
        assert "Kyodo is failing" in out
        assert "5 failures in a row" in out and "last: timeout" in out


def test_an_empty_notification_still_says_something() -> None:
    n = Notification("test", "  ")
    for render in (render_text, render_markdown, render_html, render_telegram):
        assert "scraper test" in render(n, TZ)
    assert telegram_html_text(render_telegram(n, TZ)) == "scraper test"


def test_priority_is_shown_when_not_normal() -> None:
    assert "Priority: high" in render_text(alert(story(priority="high")), TZ)
    assert "Priority" not in render_text(alert(), TZ)


# --- hostile feed text -------------------------------------------------------------------------


def test_text_shows_hostile_strings_as_they_are() -> None:
    out = render_text(alert(hostile_story()), TZ)
    for s in HOSTILE:
        assert s in out


def test_html_escapes_hostile_strings() -> None:
    out = render_html(alert(hostile_story()), TZ)
    doc = parse_html(out)
    assert "script" not in doc.tags
    assert set(doc.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "p"} | {
        "a",
        "b",
        "br",
        "blockquote",
    }
    text = "".join(doc.text)
    for s in HOSTILE:
        assert text.count(s) >= 4, s  # title, source, snippet, rule, also reported by
    assert doc.hrefs == ["https://example.com/a?x=%22%27%3E%3Cscript%3E&y=1"] * 2


def test_markdown_escapes_hostile_strings() -> None:
    markdown_it = pytest.importorskip("markdown_it")
    out = render_markdown(alert(hostile_story()), TZ)
    rendered = markdown_it.MarkdownIt("commonmark").render(out)
    doc = parse_html(rendered)
    assert set(doc.tags) <= {"p", "strong", "a", "blockquote", "br"}
    text = "".join(doc.text)
    for s in HOSTILE:
        assert text.count(s) >= 4, (s, out)
    assert doc.hrefs == ["https://example.com/a?x=%22%27%3E%3Cscript%3E&y=1"]
    strong = re.findall(r"<strong>(.*?)</strong>", rendered)
    assert "Japan" in strong and "EU" in strong


def test_markdown_escapes_line_start_markers() -> None:
    markdown_it = pytest.importorskip("markdown_it")
    n = Notification("health", "# not a heading", text="- not a list\n1. not a list\n=== x")
    rendered = markdown_it.MarkdownIt("commonmark").render(render_markdown(n, TZ))
    assert set(parse_html(rendered).tags) <= {"p", "strong", "br"}


def test_telegram_escapes_hostile_strings() -> None:
    out = render_telegram(alert(hostile_story()), TZ)
    visible = telegram_html_text(out)  # valid for Telegram's parser
    for s in HOSTILE:
        assert visible.count(s) >= 4, s
    assert set(re.findall(r"</?([a-z]+)", out)) <= {"a", "b", "blockquote"}


def test_only_http_urls_become_links() -> None:
    assert safe_url("javascript:alert(1)") is None
    assert safe_url("data:text/html,<script>") is None
    assert safe_url("https://example.com/a b") == "https://example.com/a%20b"
    n = alert(story(url="javascript:alert(1)"))
    for render in (render_html, render_telegram):
        assert "href" not in render(n, TZ)
    assert "](javascript" not in render_markdown(n, TZ)
    assert "javascript:alert(1)" in render_text(n, TZ)


# --- Telegram fitting --------------------------------------------------------------------------


def assert_fits(markup: str, limit: int = 4096) -> str:
    assert tg_len(markup) <= limit, tg_len(markup)
    visible = telegram_html_text(markup)
    assert utf16_len(visible) <= limit
    assert "\n\n" not in markup  # Apprise would fold blank lines
    assert not re.search(r"&(?!lt;|gt;|amp;|#)", markup.replace("&amp;", ""))
    return visible


def test_telegram_long_snippet_and_title_fit() -> None:
    s = story(title="Japan " * 4000, snippet="Japan <b>& EU " * 1500)
    out = render_telegram(alert(s), TZ)
    visible = assert_fits(out)
    assert visible.startswith("Japan Japan")
    assert "…" in visible


def test_telegram_truncation_keeps_markup_valid_and_ends_with_the_link() -> None:
    s = story(snippet="Japan " * 80)
    full = render_telegram(alert(s), TZ)
    out = render_telegram(alert(s), TZ, limit=300)
    visible = assert_fits(out, 300)
    assert len(out) < len(full)
    assert out.endswith(
        '<a href="https://example.com/news/japan-eu?id=7&amp;ref=feed">'
        "example.com/news/japan-eu?id=7&amp;ref=feed</a>"
    )
    assert "…" in visible.splitlines()[-2]


def test_telegram_digest_of_300_stories_fits_with_and_n_more() -> None:
    stories = tuple(
        story(title=f"Story {i} </a>&amp; *_[", url=f"https://example.com/{i}") for i in range(300)
    )
    n = Notification("digest", "Digest: Japan (300 stories)", stories)
    out = render_telegram(n, TZ)
    visible = assert_fits(out)
    shown = len(re.findall(r"^\d+\. ", visible, re.MULTILINE))
    m = re.search(r"…and (\d+) more$", visible)
    assert m and 10 < shown < 300 and shown + int(m.group(1)) == 300


def test_telegram_counts_utf16_units() -> None:
    stories = tuple(story(title="🇯🇵" * 150, url=f"https://example.com/{i}") for i in range(100))
    out = render_telegram(Notification("digest", "Emoji", stories), TZ)
    assert_fits(out)
    assert len(out) < 4096 / 1.5  # astral characters count twice


def test_cut_markup_never_breaks_tags_or_entities() -> None:
    markup = "<b>abc &amp; def</b>\n<blockquote>one <b>two</b> three &lt;x&gt;</blockquote>"
    for limit in range(8, len(markup) + 1):
        out = cut_markup(markup, limit)
        assert len(out) <= limit, (limit, out)
        telegram_html_text(out)


hostile_text = st.lists(
    st.sampled_from([*"ab <>&;*_[]()\"'#-=\n\t/", "🇯🇵", "é", "北", "&amp;", "Japan"]),
    max_size=300,
).map("".join)


@settings(max_examples=150, deadline=None, database=None)
@given(
    title=hostile_text,
    snippet=hostile_text,
    source=hostile_text,
    terms=st.lists(hostile_text, max_size=3),
    url=st.one_of(st.none(), hostile_text.map(lambda s: "https://example.com/" + s)),
    limit=st.integers(min_value=120, max_value=4096),
    count=st.integers(min_value=1, max_value=40),
)
def test_telegram_output_is_always_valid_and_within_the_limit(
    title: str,
    snippet: str,
    source: str,
    terms: list[str],
    url: str | None,
    limit: int,
    count: int,
) -> None:
    s = StoryAlert(title, source, url, WHEN, (source,), tuple(terms), snippet, (source,))
    for n in (
        Notification("story", title, (s,)),
        Notification("digest", title, (s,) * count, text=snippet),
        Notification("health", title, text=snippet),
    ):
        out = render_telegram(n, TZ, limit=limit)
        try:
            assert_fits(out, limit)
        except TelegramParseError as e:  # pragma: no cover - the failure report
            pytest.fail(f"{e}: {out!r}")
        assert out.strip()


def test_story_without_time_or_link() -> None:
    n = alert(story(published_at=None, url=None, also_reported_by=()))
    for render in (render_text, render_markdown, render_html, render_telegram):
        out = render(n, TZ)
        assert "Kyodo" in out and "JST" not in out and "Also reported" not in out
    assert render_text(n, TZ).splitlines()[1] == "Kyodo"
