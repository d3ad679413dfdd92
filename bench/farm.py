"""A feed farm for benchmarks: N realistic RSS feeds served from loopback with ETag support.

Run as a separate process (so the server does not share the benchmark's GIL):

    python bench/farm.py --feeds 1000 --items 40 --port 8765 [--mutate 0.0]

It prints ``ready <port>`` on standard output once it listens. A small asyncio HTTP/1.1 server
with keep-alive: GET /feed/<n>.xml answers 200 with an ETag, or 304 to a matching
If-None-Match. ``--mutate F`` makes a fraction of the feeds gain one new item per request
(for warm passes that are not all 304s).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

# News-like text: everyday vocabulary, with the seed topics mentioned at a realistic rate
# (roughly one headline in twenty names Japan, the EU or North Korea).
COMMON = (
    "the a of to in and for on with as at by from that is was will has have said says after "
    "over new more than about into year years people government minister president police city "
    "state country world report reports official officials week month day time first last two "
    "three million billion percent market markets company companies bank prices price rise fall "
    "growth economy trade talks deal plan plans court law election vote party leader leaders "
    "health hospital school schools students water energy oil gas climate storm flood fire "
    "workers union strike jobs tax budget housing rent homes crime trial judge ruling appeal "
    "football match season team coach cup win wins lost film music festival art museum book "
    "study scientists research data technology software phone apps users online security "
    "military army navy border talks summit visit meeting agreement support warning record"
).split()
TOPICAL = (
    "Japan Tokyo EU Brussels European Union North Korea Pyongyang missile defense partnership "
    "Seoul Kishida Ishiba NATO sanctions"
).split()


NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def word(rng: random.Random) -> str:
    return rng.choice(TOPICAL) if rng.random() < 0.005 else rng.choice(COMMON)


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(word(rng) for _ in range(n))


def make_feed(i: int, items: int, extra: int = 0) -> bytes:
    rng = random.Random(i)
    base = NOW
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">\n<channel>\n'
        f"<title>Farm feed {i}</title>\n<link>http://farm.example/{i}/</link>\n"
        f"<description>{sentence(rng, 8)}</description>\n"
    ]
    for j in range(items + extra):
        n = j if j < items else items + (j - items)
        when = base - timedelta(minutes=17 * n + i)
        title = sentence(rng, rng.randint(6, 12)).capitalize()
        body = " ".join(
            f"<p>{sentence(rng, rng.randint(15, 30))} &amp; {sentence(rng, 5)}.</p>"
            for _ in range(rng.randint(2, 4))
        )
        parts.append(
            "<item>\n"
            f"<title>{title}</title>\n"
            f"<link>http://farm.example/{i}/story-{n}.html?utm_source=rss</link>\n"
            f'<guid isPermaLink="false">farm-{i}-{n}</guid>\n'
            f"<pubDate>{format_datetime(when)}</pubDate>\n"
            f"<dc:creator>{sentence(rng, 2).title()}</dc:creator>\n"
            f"<category>{rng.choice(COMMON)}</category>\n"
            f"<description><![CDATA[{body}]]></description>\n"
            "</item>\n"
        )
    parts.append("</channel>\n</rss>\n")
    return "".join(parts).encode()


class Farm:
    def __init__(self, feeds: int, items: int, mutate: float) -> None:
        self.items = items
        self.bodies = {f"/feed/{i}.xml": make_feed(i, items) for i in range(feeds)}
        self.etags = {p: '"' + hashlib.md5(b).hexdigest() + '"' for p, b in self.bodies.items()}
        rng = random.Random(7)
        self.mutating = {p for p in self.bodies if rng.random() < mutate}
        self.extra: dict[str, int] = {}
        self.requests = 0

    def answer(self, path: str, inm: str | None) -> bytes:
        self.requests += 1
        if path in self.mutating:
            extra = self.extra.get(path, 0) + 1
            self.extra[path] = extra
            i = int(path.split("/")[-1].split(".")[0])
            body = make_feed(i, self.items, extra)
            self.bodies[path] = body
            self.etags[path] = '"' + hashlib.md5(body).hexdigest() + '"'
        body = self.bodies.get(path)
        if body is None:
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        etag = self.etags[path]
        if inm == etag:
            return f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n".encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml; charset=utf-8\r\n"
            f"ETag: {etag}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                inm = None
                for line in lines[1:]:
                    if line.lower().startswith("if-none-match:"):
                        inm = line.split(":", 1)[1].strip()
                writer.write(self.answer(path, inm))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


async def serve(args: argparse.Namespace) -> None:
    farm = Farm(args.feeds, args.items, args.mutate)
    server = await asyncio.start_server(farm.handle, "127.0.0.1", args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mutate", type=float, default=0.0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
