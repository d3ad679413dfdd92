"""Focused tests of the parser layer: charsets, links, identity, text, dates, JSON Feed, HTML."""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scraper.charset import decode_document
from scraper.models import HtmlSelectors, ParsedFeed
from scraper.parse import canonical_url, parse_document
from scraper.text import html_to_text, parse_date

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
needs_corpus = pytest.mark.skipif(not CORPUS.exists(), reason="corpus not found")
FEED_URL = "https://news.example.com/feeds/world.xml"


def corpus(path: str) -> bytes:
    return (CORPUS / path).read_bytes()


def parse(body: bytes | str, **kwargs: object) -> ParsedFeed:
    data = body.encode("utf-8") if isinstance(body, str) else body
    kwargs.setdefault("url", FEED_URL)
    return parse_document(data, **kwargs)  # type: ignore[arg-type]


def rss(items: str, *, channel_extra: str = "", decl: str = "") -> str:
    return (
        f'{decl}<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>T</title><link>https://news.example.com/</link>{channel_extra}"
        f"{items}</channel></rss>"
    )


# --- character sets ----------------------------------------------------------------------


@needs_corpus
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # ISO-8859-1 declared on UTF-8 bytes
        (
            "feeds/rdf/laut-de_declared-latin1-utf8-bytes.xml",
            "Video der letzten Probe veröffentlicht",
        ),
        ("feeds/rss2/golem-de_iso-8859-1.xml", "ä"),  # real ISO-8859-1
        ("feeds/rss2/ibash-org-ru_windows-1251.xml", "Цитата"),
        ("feeds/rss2/kc0011-forum_gb2312-nonrfc-dates.xml", "建国35周年纪念"),
        ("feeds/rss2/muhasebetr_iso-8859-9-turkish.xml", "ş"),
        ("feeds/rdf/tdiary-ishinao_euc-jp.xml", "の"),
        ("feeds/malformed/1470-net-mm_euc-jp-maybe-bad.xml", "負荷分散"),  # JIS X 0213 bytes
        ("feeds/rdf/2ch-top10news_shift-jis-ncr.xml", "鹿児島工"),  # Shift_JIS declared, NCRs
        # no declaration: sniffed
        ("feeds/malformed/blog-excerpt_koi8r_no-encoding-decl.xml", "Как пережить новогоднюю ночь"),
        ("feeds/malformed/blog-excerpt_euckr_no-encoding-decl.xml", "한글닉네임"),
        ("feeds/malformed/blog-excerpt_eucjp_no-encoding-decl.xml", "ゲーム三昧な正月"),
        ("feeds/malformed/blog-excerpt_tis620_no-encoding-decl.xml", "สำนักงาน"),
        ("feeds/malformed/blog-excerpt_windows1255_no-encoding-decl.xml", "אינטרנט"),
        ("feeds/malformed/uol-noticias_no-decl-latin1-bytes.xml", "simulações de 2º turno"),
        ("feeds/malformed/le-cercle-psy_no-decl-latin1-bytes.xml", "é"),
        ("feeds/rss2/donthitsave_utf8-bom-no-guid.xml", "today’s comic"),  # UTF-8 BOM
    ],
)
def test_charsets_from_corpus(path: str, expected: str) -> None:
    result = parse(corpus(path))
    text = " ".join(f"{i.title} {i.summary} {i.content} {i.author}" for i in result.items)
    assert expected in text
    assert "\ufffd" not in text and "Ã" not in text


@needs_corpus
@pytest.mark.parametrize("name", ["utf-16be", "utf-16le"])
def test_utf16_without_bom(name: str) -> None:
    result = parse(corpus(f"feeds/malformed/{name}-no-bom-no-decl_synthetic.xml"))
    assert result.error is None
    assert len(result.items) == 1 and result.items[0].title


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-8-sig"])
def test_byte_order_marks(codec: str) -> None:
    doc = rss("<item><title>Grüße aus Tōkyō</title><guid>g1</guid></item>")
    doc = doc.replace("<rss", f'<?xml version="1.0" encoding="{codec}"?><rss', 1)
    result = parse(doc.encode(codec))
    assert [i.title for i in result.items] == ["Grüße aus Tōkyō"]


def test_declared_shift_jis_on_utf8_bytes() -> None:
    doc = '<?xml version="1.0" encoding="Shift_JIS"?>' + rss(
        "<item><title>北朝鮮のミサイル発射</title><link>https://a.example/1</link></item>"
    )
    assert parse(doc).items[0].title == "北朝鮮のミサイル発射"


def test_http_charset_used_when_the_document_declares_nothing() -> None:
    body = rss("<item><title>Новости Оренбурга</title><guid>1</guid></item>").encode("cp1251")
    result = parse(body, content_type="application/rss+xml; charset=windows-1251")
    assert result.items[0].title == "Новости Оренбурга"


def test_wrong_http_charset_loses_to_valid_utf8() -> None:
    body = rss("<item><title>Über Zürich</title><guid>1</guid></item>").encode()
    result = parse(body, content_type="text/xml; charset=iso-8859-1")
    assert result.items[0].title == "Über Zürich"


@needs_corpus
def test_html_page_charset_declared_wrongly() -> None:
    decoded = decode_document(
        corpus("pages/article/jvndb_shift-jis-declared-utf8-bytes.html"), None, "html"
    )
    assert "脆弱性対策情報データベース" in decoded.text
    decoded = decode_document(
        corpus("pages/article/rp-pl-rzeczpospolita_windows-1250.html"), None, "html"
    )
    assert "Sejm zagłosował" in decoded.text


# --- links ---------------------------------------------------------------------------------


def test_relative_links_resolve_against_feed_url() -> None:
    result = parse(
        rss(
            "<item><title>a</title><link>/world/1.html</link></item>"
            "<item><title>b</title><link>2.html</link></item>"
            '<item><title>c</title><guid isPermaLink="true">/blog/c</guid></item>'
        )
    )
    assert [i.url for i in result.items] == [
        "https://news.example.com/world/1.html",
        "https://news.example.com/feeds/2.html",
        "https://news.example.com/blog/c",
    ]
    assert result.items[2].guid == "/blog/c"  # the raw GUID is kept


def test_xml_base_nested() -> None:
    doc = """<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://base.example/a/">
      <title>x</title>
      <entry xml:base="b/"><id>1</id><title>one</title><link href="c.html"/></entry>
      <entry><id>2</id><title>two</title><link rel="alternate" href="/root.html"/>
        <link rel="self" href="/self"/></entry>
      <entry xml:base="#frag"><id>3</id><title>three</title><link href="d"/></entry>
    </feed>"""
    urls = [i.url for i in parse(doc).items]
    assert urls == [
        "https://base.example/a/b/c.html",
        "https://base.example/root.html",
        "https://base.example/a/d",
    ]


@needs_corpus
def test_xml_base_corpus_feed() -> None:
    result = parse(corpus("feeds/atom/relative-urls-example.xml"), url="https://example.com/f")
    assert result.items[0].url == "https://example.com/blog/2003/12/13/atom03"


@pytest.mark.parametrize(
    "href",
    ["javascript:alert(1)", " JavaScript:alert(1)", "java\tscript:alert(1)", "data:text/html,x",
     "vbscript:msgbox(1)"],
)  # fmt: skip
def test_unsafe_link_is_dropped(href: str) -> None:
    result = parse(rss(f"<item><title>t</title><link>{href}</link><guid>g</guid></item>"))
    assert result.items[0].url is None


def test_script_never_survives() -> None:
    result = parse(
        rss(
            "<item><title>Hi &lt;script&gt;alert(1)&lt;/script&gt;there</title><guid>1</guid>"
            "<description><![CDATA[<p onclick='x()'>text</p><script>evil()</script>"
            "<style>p{}</style>&lt;script&gt;bad()&lt;/script&gt;]]></description>"
            "<content:encoded>&lt;SCRIPT src=x&gt;&lt;/SCRIPT&gt;body</content:encoded></item>"
        )
    )
    item = result.items[0]
    assert item.title == "Hi there"
    assert item.summary == "text"
    assert item.content == "body"


# --- identity ------------------------------------------------------------------------------


def test_repeated_guid_told_apart_stably() -> None:
    doc = rss(
        "".join(
            f"<item><title>Story {n}</title><guid>same</guid>"
            f"<pubDate>Mon, 0{n} Jan 2024 10:00:00 GMT</pubDate></item>"
            for n in (1, 2, 3)
        )
        + "<item><title>Other</title><guid>other</guid></item>"
    )
    first = parse(doc).items
    keys = [i.key for i in first]
    assert len(set(keys)) == 4
    assert all(k.startswith("same#") for k in keys[:3])
    assert keys[3] == "other"
    assert [i.guid for i in first] == ["same", "same", "same", "other"]
    reordered = parse(doc.replace("Story 1", "Story 1", 1)).items
    assert [i.key for i in reordered] == keys
    # the same item in a smaller document keeps the hash suffix it had
    assert keys[0] == "same#" + keys[0].split("#")[1]


def test_repeated_url_without_guid() -> None:
    doc = rss(
        "<item><title>A</title><link>https://x.example/live</link></item>"
        "<item><title>B</title><link>https://x.example/live#x</link></item>"
    )
    keys = [i.key for i in parse(doc).items]
    assert keys[0] != keys[1]
    assert all(k.startswith("https://x.example/live#") for k in keys)


def test_identity_falls_back_to_url_then_hash() -> None:
    doc = rss(
        "<item><title>A</title><link>HTTPS://X.Example/a?utm_source=rss&amp;id=7#top</link>"
        "</item><item><title>No link</title><pubDate>Mon, 01 Jan 2024 10:00:00 GMT</pubDate>"
        "</item><item><description>only text</description></item><item></item>"
        "<item><title> </title><description> </description></item>"
    )
    items = parse(doc).items
    assert len(items) == 3  # empty entries are not items
    assert items[0].key == "https://x.example/a?id=7"
    assert items[0].url == "HTTPS://X.Example/a?utm_source=rss&id=7#top"
    assert items[1].key.startswith("hash:") and items[2].key.startswith("hash:")
    assert items[1].key != items[2].key
    assert parse(doc).items[1].key == items[1].key  # stable


def test_exact_duplicate_entries_collapse() -> None:
    entry = "<item><title>A</title><guid>g</guid></item>"
    assert len(parse(rss(entry * 3)).items) == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.COM/Path?q=1#frag", "https://example.com/Path?q=1"),
        ("https://example.com", "https://example.com/"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://ex.com/a?utm_source=x&utm_medium=y&id=3&fbclid=z&gclid=q", "https://ex.com/a?id=3"),
        ("https://ex.com/a?b=2&a=1", "https://ex.com/a?b=2&a=1"),
        ("https://ex.com/a?UTM_Campaign=x", "https://ex.com/a"),
        ("  https://ex.com/a  ", "https://ex.com/a"),
        ("https://user@EX.com/a", "https://user@ex.com/a"),
        ("not a url", "not a url"),
        ("http://[::1", "http://[::1"),
    ],
)  # fmt: skip
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


# --- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("plain text", "plain text"),
        ("  lots \n\t of   space ", "lots of space"),
        ("Tom &amp; Jerry &lt;3 &nbsp;&eacute;t&eacute; &#8211;", "Tom & Jerry <3 été –"),
        ("&#x263A; &#9786", "☺ ☺"),
        ("<p>one</p><p>two</p>", "one two"),
        ("un<b>bold</b>ed", "unbolded"),
        ("a<br>b<br/>c", "a b c"),
        ("<script>var x = '<p>'; if (a<b) {}</script>after", "after"),
        ("<STYLE type='text/css'>p { color: red }</STYLE>after", "after"),
        ("before<!-- a <b>comment</b> -->after", "beforeafter"),
        ('<a href="x" title="a>b">link</a>', "link"),
        ("a < b and c > d", "a < b and c > d"),
        ("&lt;p&gt;escaped markup stays text&lt;/p&gt;", "<p>escaped markup stays text</p>"),
        ("<html:p>x</html:p><html:script>y</html:script>", "x"),
        ("<![CDATA[x]]>y", "y"),
        ("<div>unterminated <a href='x", "unterminated"),
        ("", ""),
    ],
)  # fmt: skip
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 02 Mar 2021 23:39:15 +0100", datetime(2021, 3, 2, 22, 39, 15, tzinfo=UTC)),
        ("Sun, 19 May 2002 15:21:36 EST", datetime(2002, 5, 19, 20, 21, 36, tzinfo=UTC)),
        ("2 Mar 21 23:39 GMT", datetime(2021, 3, 2, 23, 39, tzinfo=UTC)),
        ("2021-03-02T23:39:15Z", datetime(2021, 3, 2, 23, 39, 15, tzinfo=UTC)),
        ("2021-03-02T23:39:15.123+09:00", datetime(2021, 3, 2, 14, 39, 15, 123000, tzinfo=UTC)),
        (" \n 2003-12-13T18:30:02-05:00 \n ", datetime(2003, 12, 13, 23, 30, 2, tzinfo=UTC)),
        ("2003-12-13", datetime(2003, 12, 13, tzinfo=UTC)),
        ("2020/1/10 14:33:00", datetime(2020, 1, 10, 14, 33, tzinfo=UTC)),
        ("Seg, 24 Set 2018 19:42:40 -0300", datetime(2018, 9, 24, 22, 42, 40, tzinfo=UTC)),
        ("Wed, 02 Oct 2002 08:00:00 XYZ", datetime(2002, 10, 2, 8, tzinfo=UTC)),
        ("garbage", None),
        ("", None),
        ("Mon, 31 Feb 2020 00:00:00 GMT", None),
        ("99999-01-01", None),
    ],
)  # fmt: skip
def test_parse_date(value: str, expected: datetime | None) -> None:
    assert parse_date(value) == expected


# --- formats -------------------------------------------------------------------------------


def test_rss_fields() -> None:
    doc = rss(
        "<item><title><![CDATA[  Japan &amp; EU <b>pact</b> ]]></title>"
        "<link>https://a.example/1</link><guid isPermaLink='false'>id-1</guid>"
        "<author>jo@example.com (Jo Smith)</author>"
        "<pubDate>Tue, 02 Mar 2021 23:39:15 +0100</pubDate>"
        "<description>&lt;p&gt;Summary&lt;/p&gt;</description>"
        "<content:encoded><![CDATA[<p>Full <i>content</i></p>]]></content:encoded></item>"
    )
    result = parse(doc)
    assert (result.format, result.title, result.error) == ("rss", "T", None)
    item = result.items[0]
    assert item.title == "Japan & EU pact"
    assert (item.key, item.guid, item.url) == ("id-1", "id-1", "https://a.example/1")
    assert (item.summary, item.content, item.author) == ("Summary", "Full content", "Jo Smith")
    assert item.published_at == datetime(2021, 3, 2, 22, 39, 15, tzinfo=UTC)


def test_atom_text_constructs() -> None:
    doc = """<feed xmlns="http://www.w3.org/2005/Atom"><title type="html">A &amp;amp; B</title>
      <author><name>Feed Author</name></author>
      <entry><id>e1</id><title type="text">x &lt;y&gt; z</title>
        <link href="https://a.example/e1"/><updated>2024-01-02T03:04:05Z</updated>
        <summary type="html">&lt;b&gt;bold&lt;/b&gt;</summary>
        <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>para</p>
          <script>x()</script><p>two</p></div></content></entry></feed>"""
    result = parse(doc)
    assert (result.format, result.title) == ("atom", "A & B")
    item = result.items[0]
    assert item.title == "x <y> z"  # type="text": markup characters are text
    assert (item.summary, item.content, item.author) == ("bold", "para two", "Feed Author")
    assert item.published_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_rss10_rdf_and_atom03() -> None:
    rdf = """<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
      xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
      <channel rdf:about="x"><title>R</title></channel>
      <item rdf:about="https://a.example/1"><title>one</title><link>https://a.example/1</link>
        <dc:date>2006-05-26T18:21:03+09:00</dc:date></item></rdf:RDF>"""
    result = parse(rdf)
    assert result.format == "rdf" and result.items[0].guid is None
    assert result.items[0].published_at == datetime(2006, 5, 26, 9, 21, 3, tzinfo=UTC)
    atom03 = """<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>old</title>
      <entry><id>tag:x,2005:1</id><title>t</title><issued>2005-01-01T00:00:00Z</issued>
      <link rel="alternate" type="text/html" href="https://a.example/o"/>
      <content type="text/html" mode="escaped">&lt;p&gt;hi&lt;/p&gt;</content></entry></feed>"""
    result = parse(atom03)
    assert result.format == "atom"
    assert (result.items[0].url, result.items[0].content) == ("https://a.example/o", "hi")


@needs_corpus
@pytest.mark.parametrize(
    ("path", "fmt", "count"),
    [
        ("feeds/rss2/leancrew-all-this_rss-served-as-atom.xml", "rss", 12),
        ("feeds/rdf/heise-newsticker_rss090.xml", "rdf", 60),
        ("feeds/atom/hatena-bookmark_atom03.xml", "atom", 15),
        ("feeds/malformed/tablix-avian-blog_atom-inside-xhtml.xml", "atom", 10),
        ("feeds/rss2/pcmag-dvorak_nested-items.xml", "rss", 10),
    ],
)
def test_format_detected_from_content(path: str, fmt: str, count: int) -> None:
    result = parse(corpus(path), content_type="text/html")
    assert result.format == fmt and len(result.items) == count


def test_json_feed_1_1() -> None:
    doc = """{"version": "https://jsonfeed.org/version/1.1", "title": "J",
      "authors": [{"name": "Feed Person"}],
      "items": [
        {"id": 42, "url": "/posts/1", "title": "Caf&eacute; <b>news</b>",
         "content_html": "<p>Hello</p><script>x()</script>", "summary": "Sum",
         "date_published": "2024-05-01T10:00:00+02:00", "authors": [{"name": "A"}, {"name": "B"}]},
        {"id": "", "external_url": "https://elsewhere.example/x",
         "content_text": "  plain\\n text "},
        {"id": "3"}, "not an object"
      ]}"""
    result = parse(doc, url="https://blog.example/feed.json")
    assert (result.format, result.title, result.error) == ("json", "J", None)
    first, second = result.items
    assert (first.key, first.guid, first.url) == ("42", "42", "https://blog.example/posts/1")
    assert (first.title, first.content, first.summary) == ("Café news", "Hello", "Sum")
    assert first.author == "A, B"
    assert first.published_at == datetime(2024, 5, 1, 8, tzinfo=UTC)
    assert (second.guid, second.url, second.content) == (
        None,
        "https://elsewhere.example/x",
        "plain text",
    )
    assert second.author == "Feed Person"


def test_json_feed_1_0_author_and_version_uri() -> None:
    doc = """{"version": "http://jsonfeed.org/version/1", "title": "Old",
      "author": {"name": "Legacy"}, "items": [{"id": "a", "url": "https://x.example/a",
      "title": "t", "content_text": "c", "date_modified": "2020-01-01T00:00:00Z"}]}"""
    item = parse(doc).items[0]
    assert (item.author, item.published_at) == ("Legacy", datetime(2020, 1, 1, tzinfo=UTC))


@needs_corpus
def test_truncated_json_feed_recovers_complete_items() -> None:
    result = parse(corpus("feeds/malformed/leancrew-all-this_truncated-jsonfeed.json"))
    assert result.error and result.error.startswith("invalid JSON")
    assert result.items and all(i.title and i.url for i in result.items)


@needs_corpus
def test_json_that_is_not_a_json_feed() -> None:
    result = parse(corpus("feeds/malformed/scripting-news_rss-as-json-not-jsonfeed.json"))
    assert result.items == () and result.error


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"   \n\t", b"\xff\xfe", b"\x00\x01\x02\x03" * 20])
def test_empty_or_garbage_body(body: bytes) -> None:
    result = parse(body)
    assert result.items == () and result.error


def test_malformed_xml_recovers_items() -> None:
    doc = rss(
        "<item><title>One &nbsp;&uuml;</title><link>https://a.example/1?a=1&b=2</link></item>"
        "<item><title>Two\x0b</title><guid>2</guid></item>"
        "<item><title>Three</title><guid>3</guid>"
    )
    result = parse(doc)
    assert result.error and result.error.startswith("not well-formed XML")
    assert [i.title for i in result.items] == ["One ü", "Two", "Three"]
    assert result.items[0].url == "https://a.example/1?a=1&b=2"


def test_gzip_body_without_content_encoding() -> None:
    body = gzip.compress(rss("<item><title>zipped</title><guid>z</guid></item>").encode())
    assert parse(body).items[0].title == "zipped"
    assert parse(body[:20]).error  # truncated: an error, not an exception


def test_parser_bug_becomes_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import scraper.parse

    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(scraper.parse, "_sniff", boom)
    result = parse(rss(""))
    assert result.items == () and result.error == "parser failed: RuntimeError: bug"


# --- HTML pages ----------------------------------------------------------------------------


def test_autodiscovery_prefers_the_main_feed() -> None:
    page = """<!DOCTYPE html><html><head><base href="https://site.example/blog/">
      <link rel="alternate" type="application/rss+xml" title="Comments" href="comments.xml">
      <link rel="stylesheet" href="x.css">
      <link rel="alternate" type="application/feed+json" href="feed.json">
      <link rel="alternate feed" type="application/atom+xml" href="atom.xml?a=1&amp;b=2">
      </head><body></body></html>"""
    result = parse(page, url="https://site.example/")
    assert result == ParsedFeed(
        items=(), format="html", feed_url="https://site.example/blog/atom.xml?a=1&b=2"
    )


def test_html_page_without_a_feed() -> None:
    result = parse("<html><head><title>x</title></head><body>hi</body></html>")
    assert result.items == () and result.format == "html" and result.feed_url is None
    assert result.error


@needs_corpus
def test_autodiscovery_on_corpus_pages() -> None:
    page = corpus("pages/listing/daringfireball-homepage.html")
    assert (
        parse(page, url="https://daringfireball.net/").feed_url
        == "https://daringfireball.net/feeds/main"
    )
    page = corpus("pages/listing/cnn-international-homepage.html")
    assert (
        parse(page, url="http://edition.cnn.com/").feed_url == "http://rss.cnn.com/rss/edition.rss"
    )


# The selectors the default configuration uses for CNN International (edition.cnn.com).
CNN = HtmlSelectors(item="ul.cnn_bulletbin > li", title="a[href]", link="a[href]")


@needs_corpus
def test_html_selectors_on_cnn_international() -> None:
    page = corpus("pages/listing/cnn-international-homepage.html")
    result = parse(page, url="http://edition.cnn.com/", content_type="text/html", selectors=CNN)
    assert result.error is None and result.format == "html"
    assert len(result.items) >= 10
    titles = [i.title for i in result.items]
    assert "More remains to arrive in Netherlands" in titles
    assert "Two jets shot down in east Ukraine" in titles
    for item in result.items:
        assert item.title and item.url and item.url.startswith(("http://", "https://"))
        assert item.guid is None and item.key.startswith(canonical_url(item.url))
    first = result.items[2]
    assert first.url == (
        "http://edition.cnn.com/2014/07/24/world/europe/ukraine-malaysia-airlines-crash/"
        "index.html?hpt=hp_t2"
    )


def test_html_selectors_fields() -> None:
    page = """<html><body><main>
      <article class="card"><h3>First <em>story</em></h3><a href="/news/1">more</a>
        <time datetime="2024-05-01T10:00:00Z">yesterday</time><p>Sum one</p></article>
      <article class="card"><h3>Second</h3><span class="d">2 May 2024</span>
        <a href="javascript:void(0)">x</a></article>
      <a class="card" href="https://other.example/3"><h3>Third</h3></a>
      <article class="card"><p>no title, no link</p></article>
    </main><script>document.write('<article class="card">')</script></body></html>"""
    sel = HtmlSelectors(item=".card", title="h3", link="a[href]", date="time, .d", summary="p")
    items = parse(page, url="https://site.example/list", selectors=sel).items
    assert [i.title for i in items] == ["First story", "Second", "Third"]
    assert [i.url for i in items] == [
        "https://site.example/news/1",
        None,
        "https://other.example/3",
    ]
    assert items[0].published_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert items[1].published_at == datetime(2024, 5, 2, tzinfo=UTC)
    assert items[0].summary == "Sum one"


def test_html_selectors_errors() -> None:
    page = "<html><body><div>x</div></body></html>"
    bad = parse(page, selectors=HtmlSelectors(item="div[", title="h3"))
    assert bad.items == () and bad.error and "selector" in bad.error
    none = parse(page, selectors=HtmlSelectors(item="article", title="h3"))
    assert none.items == () and none.error and "article" in none.error


# --- hostile input -------------------------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "body",
    [
        b"<rss><channel><item><title>" + b"<b>" * 50_000,  # deeper than libxml2 allows
        b"<html><head>" + b'<link rel="alternate" href="x' * 20_000,  # unterminated tags
        b"<!--a-->" * 1_000 + b"x",  # a long prolog that is no feed
        b'{"items": ' + b"[" * 50_000,  # JSON nesting beyond the recursion limit
        b'<!DOCTYPE r [<!ENTITY a "aa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
        b"]><rss><channel><item><title>&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;</title></item></channel></rss>",
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss><channel><item><title>a&x;b'
        b"</title></item></channel></rss>",
    ],
    ids=["deep", "unterminated-links", "comment-prolog", "deep-json", "entity-expansion", "xxe"],
)
def test_hostile_documents_end_quickly(body: bytes) -> None:
    start = time.perf_counter()
    result = parse(body)
    assert time.perf_counter() - start < 2.0
    for item in result.items:
        assert "root:" not in item.title  # no external entity was read


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=2000) | st.text(alphabet="<>&;/=\"'!-?[]abcxyz :#\n", max_size=400))
def test_parse_document_never_raises(body: bytes | str) -> None:
    result = parse(body)
    assert isinstance(result, ParsedFeed)
    for item in result.items:
        assert "<script" not in f"{item.title}{item.summary}{item.content}".lower()


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet="<>&;/=\"'!-?abscriptyle :#\n", max_size=400))
def test_html_to_text_never_leaves_script_markup(html: str) -> None:
    text = html_to_text(html)
    assert "<script" not in text.lower() and "<style" not in text.lower()
    assert text == text.strip() and "  " not in text
