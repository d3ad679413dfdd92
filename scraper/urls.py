"""Links: resolve them safely and reduce them to a canonical form for identity."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit, urlunsplit

__all__ = ["canonical_url", "resolve_link"]

# Query parameters that only track the reader; removed by canonical_url (compared lower-cased).
TRACKING_PARAMS = frozenset(
    [
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "ttclid",
        "igshid",
        "li_fat_id",
        "mc_cid",
        "mc_eid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "vero_conv",
        "_ga",
        "_gl",
        "__twitter_impression",
        "ncid",
        "ocid",
        "cmpid",
        "sr_share",
        "ref_src",
        "ref_url",
        "smid",
        "emc",
        "spm",
        "xtor",
        "at_medium",
        "at_campaign",
        "at_custom1",
        "wt.mc_id",
        "wt_mc_id",
        "hpt",
    ]
)
# Schemes that run code or read local data: a link with one of them is dropped.
UNSAFE_SCHEMES = frozenset({"javascript", "vbscript", "data", "file", "livescript"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_STRIP = "".join(chr(c) for c in range(33))  # C0 controls and space, as browsers strip them
_RE_PLAIN_ABSOLUTE = re.compile(r"https?://[^\s\\]+\Z", re.IGNORECASE)
_RE_PLAIN_CANONICAL = re.compile(r"https?://[a-z0-9.-]+/[^?#\s\\]*\Z")
# Also simple: a lower-case host, no port, a query and/or fragment to clean up.
_RE_SIMPLE_QUERY = re.compile(r"(https?://[a-z0-9.-]+/[^?#\s\\]*)(?:\?([^#\s\\]*))?(?:#.*)?\Z")


def resolve_link(href: str | None, base: str | None) -> str | None:
    """``href`` made absolute against ``base``; None when empty, malformed or unsafe."""
    if not href:
        return None
    href = href.strip(_STRIP)
    if not href:
        return None
    if _RE_PLAIN_ABSOLUTE.match(href):
        return href  # the common case needs neither urljoin nor a scheme check
    try:
        url = urljoin(base, href) if base else href
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # e.g. a bad IPv6 literal or port
        return None
    if scheme in UNSAFE_SCHEMES:
        return None
    return url


def _is_tracking(pair: str) -> bool:
    name = pair.partition("=")[0].lower()
    return name.startswith("utm_") or name in TRACKING_PARAMS


def canonical_url(url: str) -> str:
    """The URL with scheme and host lower-cased, the default port, the fragment and tracking
    parameters (utm_*, fbclid, gclid...) removed; other parameters keep their order and
    spelling. A string that does not parse as a URL is returned stripped."""
    url = url.strip(_STRIP)
    if _RE_PLAIN_CANONICAL.match(url):
        return url  # already canonical: lower-case host, a path, no port, query or fragment
    simple = _RE_SIMPLE_QUERY.match(url)
    if simple:  # the common case of tracking parameters: no urlsplit needed
        base, query = simple.groups()
        if query:
            query = "&".join(p for p in query.split("&") if p and not _is_tracking(p))
        return f"{base}?{query}" if query else base
    try:
        parts = urlsplit(url)
        port = parts.port  # validates the port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    if netloc:
        userinfo, at, hostport = netloc.rpartition("@")
        host = hostport
        if port is not None and hostport.endswith(f":{port}"):
            host = hostport[: -len(str(port)) - 1]
            if _DEFAULT_PORTS.get(scheme) != str(port):
                host = f"{host}:{port}"
        elif hostport.endswith(":"):  # "example.com:" has an empty port
            host = hostport[:-1]
        netloc = f"{userinfo}{at}{host.lower()}"
    path = parts.path or ("/" if netloc else "")
    query = parts.query
    if query:
        query = "&".join(p for p in query.split("&") if p and not _is_tracking(p))
    return urlunsplit((scheme, netloc, path, query, ""))
