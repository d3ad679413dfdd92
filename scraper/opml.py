"""OPML 2.0: export the configured sources, import another reader's subscriptions, and append
imported sources to scraper.toml without touching a byte of what is already there.

Feeds are ``<outline type="rss" xmlUrl=...>``; tags travel in ``category`` (comma-separated,
as OPML 2.0 defines for tags), and on import nested folders become tags too. An ``html``
source has no feed, so it is exported as ``type="link"`` with its selectors in our own
namespace, which other readers ignore and our import restores.
"""

from __future__ import annotations

import html.entities
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import tomlkit

from scraper.errors import ConfigError
from scraper.models import HtmlSelectors, Source
from scraper.settings import PROJECT_URL, SELECTOR_KEYS, locate_keys, parse_toml

NS = f"{PROJECT_URL}/opml"
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}


# --- export ----------------------------------------------------------------------------------


def export_opml(
    sources: Iterable[Source], *, title: str = "scraper sources", now: datetime | None = None
) -> str:
    """The sources as an OPML 2.0 document (``now``, if given, becomes ``dateCreated``)."""
    root = ET.Element("opml", {"version": "2.0", "xmlns:scraper": NS})
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    if now is not None:
        ET.SubElement(head, "dateCreated").text = format_datetime(now)
    body = ET.SubElement(root, "body")
    for source in sources:
        attrs = {"text": source.name, "title": source.name}
        if source.kind == "html":
            attrs |= {"type": "link", "url": source.shown_url, "htmlUrl": source.shown_url}
            attrs["scraper:kind"] = "html"
            for key in SELECTOR_KEYS:
                value = getattr(source.selectors, key, None)
                if value is not None:
                    attrs[f"scraper:{key}"] = value
        else:
            attrs |= {"type": "rss", "xmlUrl": source.shown_url}
        if source.tags:
            attrs["category"] = ",".join(source.tags)
        if not source.enabled:
            attrs["scraper:enabled"] = "false"
        ET.SubElement(body, "outline", attrs)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


# --- import ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpmlImport:
    """What an OPML document held: its sources, and a line for each outline left out."""

    sources: tuple[Source, ...]
    skipped: tuple[str, ...] = field(default=())


def import_opml(opml_text: str | bytes, *, file: str | Path | None = None) -> list[Source]:
    """The sources in an OPML document (folders and categories become tags); outlines with no
    usable feed URL are left out (``parse_opml`` says which). Raises ConfigError when the
    document is not OPML at all."""
    return list(parse_opml(opml_text, file=file).sources)


def parse_opml(opml_text: str | bytes, *, file: str | Path | None = None) -> OpmlImport:
    """Like ``import_opml``, also reporting the outlines it left out and why."""
    root = _parse_xml(opml_text, file)
    if _local(root.tag).lower() != "opml":
        message = f"not an OPML document: the root element is <{_local(root.tag)}>, not <opml>"
        raise ConfigError(message, file=file)
    body = next((e for e in root if _local(e.tag).lower() == "body"), root)
    found: dict[str, Source] = {}
    skipped: list[str] = []
    _walk(body, (), found, skipped)
    return OpmlImport(tuple(found.values()), tuple(skipped))


def _parse_xml(text: str | bytes, file: str | Path | None) -> ET.Element:
    if isinstance(text, bytes):
        text = _decode(text)
    text = text.lstrip("\ufeff \t\r\n")
    if not text:
        raise ConfigError("not an OPML document: the file is empty", file=file)
    if re.search(r"<!ENTITY", text, re.IGNORECASE):
        raise ConfigError("OPML with entity declarations is not supported", file=file)
    text = re.sub(r"^<\?xml[^>]*\?>", "", text)  # the text is decoded already
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        error = exc
    try:  # hand-made OPML often has HTML entities or a bare & in URLs: repair, try again
        return ET.fromstring(_repair(text))
    except ET.ParseError:
        line, col = error.position
        message = f"not a valid OPML (XML) document: {error.msg.split(':')[0]}, column {col + 1}"
        raise ConfigError(message, file=file, line=line) from None


def _decode(data: bytes) -> str:
    for bom, encoding in (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding)
    m = re.match(rb"\s*<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)", data)
    try:
        return data.decode(m.group(1).decode() if m else "utf-8")
    except (LookupError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def _repair(text: str) -> str:
    def entity(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in _XML_ENTITIES or name not in html.entities.name2codepoint:
            return m.group()
        return f"&#{html.entities.name2codepoint[name]};"

    text = re.sub(r"&([A-Za-z][A-Za-z0-9]*);", entity, text)
    return re.sub(r"&(?!#\d+;|#x[0-9A-Fa-f]+;|[A-Za-z][A-Za-z0-9]*;)", "&amp;", text)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(element: ET.Element, name: str) -> str:
    """An attribute by name, ignoring case (exporters disagree: xmlUrl, xmlurl, XMLURL)."""
    for key, value in element.attrib.items():
        if key.lower() == name.lower() and not key.startswith("{"):
            return value.strip()
    return ""


def _walk(
    parent: ET.Element, folders: tuple[str, ...], found: dict[str, Source], skipped: list[str]
) -> None:
    for outline in parent:
        if _local(outline.tag).lower() != "outline":
            continue
        label = _attr(outline, "text") or _attr(outline, "title")
        source = _outline_source(outline, label, folders, skipped)
        if source is not None:
            key = normalize_url(source.url)
            if key in found:  # the same feed in two folders: one source with both sets of tags
                first = found[key]
                found[key] = replace(first, tags=tuple(dict.fromkeys(first.tags + source.tags)))
            else:
                found[key] = source
        elif len(outline):
            _walk(outline, folders + ((_folder_tag(label),) if label else ()), found, skipped)


def _outline_source(
    outline: ET.Element, label: str, folders: tuple[str, ...], skipped: list[str]
) -> Source | None:
    ours = {k: outline.get(f"{{{NS}}}{k}") for k in ("kind", "enabled", *SELECTOR_KEYS)}
    url = _attr(outline, "xmlUrl")
    if ours["kind"] == "html":
        url = _attr(outline, "url") or _attr(outline, "htmlUrl")
    elif not url:
        if _attr(outline, "type").lower() in ("rss", "atom", "feed") and not len(outline):
            skipped.append(f'"{label}": no xmlUrl')
        return None
    url = _feed_scheme(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        skipped.append(f'"{label or url}": not an http(s) URL: {url}')
        return None
    category = [
        c.strip() for cats in _attr(outline, "category").split(",") for c in cats.split("/")
    ]
    tags = tuple(dict.fromkeys([*folders, *(c for c in category if c)]))
    selectors = None
    if ours["kind"] == "html":
        chosen = {k: v for k in SELECTOR_KEYS if (v := ours[k])}
        if "item" not in chosen or "title" not in chosen:
            skipped.append(f'"{label or url}": an html source without item and title selectors')
            return None
        selectors = HtmlSelectors(**chosen)
    return Source(
        name=" ".join(label.split()) or parts.hostname,
        url=url,
        kind="html" if selectors else "feed",
        tags=tags,
        enabled=ours["enabled"] != "false",
        selectors=selectors,
    )


def _feed_scheme(url: str) -> str:
    """feed://host/x -> http://host/x and feed:https://host/x -> https://host/x."""
    if url.lower().startswith("feed:"):
        rest = url[5:]
        return rest if re.match(r"https?://", rest, re.I) else "http:" + rest.lstrip(":")
    return url


def _folder_tag(label: str) -> str:
    return "-".join(label.casefold().split())


def normalize_url(url: str) -> str:
    """The URL compared for "already present": scheme and host lower-cased, default port, a
    trailing slash and the fragment dropped."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = (parts.hostname or "").lower()
    if port and (scheme, port) not in (("http", 80), ("https", 443)):
        netloc += f":{port}"
    if parts.username is not None:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


# --- append to scraper.toml -----------------------------------------------------------------


def append_sources_to_config(
    config_path: str | Path, new_sources: Iterable[Source], *, comment: str | None = None
) -> tuple[list[Source], list[Source]]:
    """Append ``[[sources]]`` tables to a configuration file, after its last source, keeping
    every existing byte (comments, order, formatting) as it was. Sources whose URL is already
    there (compared by ``normalize_url``) are skipped; names are made unique ("Name (2)").
    Returns (added, skipped), the added ones under the names they were given."""
    path = Path(config_path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration file: {exc}", file=path) from None
    data = parse_toml(text, str(path))  # tomlkit.parse would do, but is ten times slower
    existing: Any = data.get("sources", [])
    positions = locate_keys(text)
    if not isinstance(existing, list) or (existing and ("sources", 0) not in positions):
        line = positions.get(("sources",), (None,))[0]
        message = "cannot append: sources is not written as [[sources]] tables"
        raise ConfigError(message, file=path, line=line, key="sources")

    urls = {normalize_url(str(s.get("url", ""))) for s in existing if isinstance(s, dict)}
    names = {str(s.get("name", "")).casefold() for s in existing if isinstance(s, dict)}
    added: list[Source] = []
    skipped: list[Source] = []
    for source in new_sources:
        if normalize_url(source.url) in urls:
            skipped.append(source)
            continue
        name, n = source.name, 1
        while name.casefold() in names:
            n += 1
            name = f"{source.name} ({n})"
        urls.add(normalize_url(source.url))
        names.add(name.casefold())
        added.append(replace(source, name=name))
    if not added:
        return added, skipped

    newline = "\r\n" if "\r\n" in text else "\n"
    block = _render(added, comment).replace("\n", newline)
    if existing:  # right after the last source's last value: before any comment that follows
        last = len(existing) - 1
        end = max(lines[1] for p, lines in positions.items() if p[:2] == ("sources", last))
        cut = -1
        for _ in range(end):
            cut = text.find("\n", cut + 1)
            if cut < 0:
                break
        head, tail = (text, "") if cut < 0 else (text[: cut + 1], text[cut + 1 :])
    else:
        head, tail = text, ""
    if head and not head.endswith("\n"):
        head += newline
    new_text = head + (newline if head else "") + block + tail
    after = parse_toml(new_text, str(path)).get("sources", [])
    if after[: len(existing)] != existing or len(after) != len(existing) + len(added):
        raise ConfigError("cannot append sources safely: the file was left unchanged", file=path)
    _write_atomically(path, new_text)
    return added, skipped


def _render(sources: list[Source], comment: str | None) -> str:
    doc = tomlkit.document()
    aot = tomlkit.aot()
    for source in sources:
        table = tomlkit.table()
        table.add("name", source.name)
        table.add("url", source.url)
        if source.tags:
            table.add("tags", list(source.tags))
        if source.kind != "feed":
            table.add("kind", source.kind)
        for key in SELECTOR_KEYS:
            value = getattr(source.selectors, key, None)
            if value is not None and not (key == "link" and value == "a[href]"):
                table.add(key, value)
        if not source.enabled:
            table.add("enabled", False)
        aot.append(table)
    doc.append("sources", aot)
    note = "".join(f"# {line}\n" for line in (comment or "").splitlines())
    return note + tomlkit.dumps(doc)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
