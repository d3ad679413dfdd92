"""Normalisation and words, as the SPEC's rule language defines them."""

from __future__ import annotations

import pytest

from scraper.rules.text import (
    clean,
    hyphen_joined,
    is_substring_script,
    normalise,
    word_spans,
    words,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Japan's", ["japan", "s"]),
        ("Japan’s", ["japan", "s"]),
        ("North-Korea", ["north", "korea"]),
        ("Japan–EU", ["japan", "eu"]),
        ("F-35", ["f", "35"]),
        ("ＪＡＰＡＮ　ＥＵ", ["japan", "eu"]),
        ("snake_case", ["snake", "case"]),
        ("Zu\u0308rich", ["zürich"]),
        ("STRASSE Straße", ["strasse", "strasse"]),
        ("हिन्दी समाचार", ["हिन्दी", "समाचार"]),
        ("北朝鮮がミサイル、発射", ["北朝鮮がミサイル", "発射"]),
        ("<p>Japan</p><p>EU</p>", ["japan", "eu"]),
        ("Caf&eacute; &amp; bar", ["café", "bar"]),
        ("&lt;b&gt;bold&lt;/b&gt;", ["bold"]),
        ("a\x00b\x01c", ["a", "b", "c"]),
        ("emoji 🇯🇵 Japan 𝐉𝐚𝐩𝐚𝐧", ["emoji", "japan", "japan"]),
        ("", []),
        ("...", []),
    ],
)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_normalise() -> None:
    assert normalise("<b>ＪＡＰＡＮ</b> &amp; EU") == " japan  & eu"
    assert clean("a <b>b</b> &amp; c") == "a  b  & c"
    assert clean("x < y and y > z") == "x < y and y > z"  # not a tag


def test_word_spans_keep_offsets() -> None:
    text = "Japan’s North-Korea"
    assert [text[a:b] for a, b in word_spans(text)] == ["Japan", "s", "North", "Korea"]


def test_scripts_that_match_as_substrings() -> None:
    for word in ("北朝鮮", "ミサイル", "북한", "ญี่ปุ่น", "G7サミット"):
        assert is_substring_script(word)
    for word in ("japan", "zürich", "москва", "हिन्दी"):
        assert not is_substring_script(word)


def test_hyphen_joined() -> None:
    assert hyphen_joined("f-35") == "f35"
    assert hyphen_joined("e–mail") == "email"
    assert hyphen_joined("u.s.") is None
    assert hyphen_joined("japan") is None
    assert hyphen_joined("-a-b") is None
