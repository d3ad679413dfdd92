"""Benchmark (not a test): compile 1,000 rules and match them against 100,000 items.

    python bench/bench_rules.py [--rules 1000] [--items 100000] [--seed 1]

Generates news-like rules (terms, phrases, prefixes, NEAR, NOT, field scopes, aliases, Japanese
and Korean terms) that follow some of 6,000 companies, people and towns (and a few broad
topics), and items that mention them (English headlines and summaries, some Japanese and Korean
ones, some with stray HTML), then
times Matcher.compile and one match() per item, in this one process. Prints items/s and the
microseconds one item costs, so that the share of matching in a pipeline pass can be read off.

Target on the 2-core reference machine: compile + match <= 5 s for 1,000 rules x 100,000 items.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scraper.models import Rule  # noqa: E402
from scraper.rules import Matcher, parse_query  # noqa: E402


def _split(text: str) -> list[str]:
    return text.split()


PLACES = _split(
    "Japan Tokyo China Beijing Korea Seoul Taiwan India Delhi Germany Berlin France Paris "
    "Ukraine Kyiv Russia Moscow Brazil Mexico Canada Australia Indonesia Vietnam Philippines "
    "Thailand Singapore Malaysia Pakistan Iran Israel Gaza Egypt Turkey Poland Italy Spain "
    "Sweden Finland Norway Britain London Washington Ottawa Nigeria Kenya Ethiopia Argentina "
    "Chile Peru Colombia Venezuela Cuba Syria Iraq Yemen Lebanon Jordan Qatar Brussels"
)
ORGS = _split("EU NATO UN IMF WTO ASEAN G7 G20 OPEC WHO ECB Fed BOJ Pentagon Kremlin")
PEOPLE = [
    ("Shigeru", "Ishiba"),
    ("Fumio", "Kishida"),
    ("Ursula", "von der Leyen"),
    ("Josep", "Borrell"),
    ("Kim", "Jong Un"),
    ("Xi", "Jinping"),
    ("Joe", "Biden"),
    ("Donald", "Trump"),
    ("Emmanuel", "Macron"),
    ("Olaf", "Scholz"),
    ("Narendra", "Modi"),
    ("Vladimir", "Putin"),
    ("Volodymyr", "Zelensky"),
    ("Keir", "Starmer"),
    ("Yoon", "Suk Yeol"),
    ("Lula", "da Silva"),
    ("Mark", "Rutte"),
    ("Kaja", "Kallas"),
    ("Antonio", "Guterres"),
]
TOPICS = _split(
    "election tariff tariffs sanctions missile missiles defense defence summit inflation "
    "earthquake typhoon flood wildfire protest strike ceasefire treaty pact partnership trade "
    "budget deficit interest rates currency yen euro dollar oil gas energy nuclear reactor "
    "vaccine outbreak cyberattack hackers semiconductor chips exports imports drills navy "
    "troops drone drones satellite launch court ruling minister parliament coalition scandal"
)
PREFIXES = _split(
    "defen sanction tarif missil nuclea elect inflat cyber semicond export import ceasefir "
    "militar diplomat refuge migra climat carbon"
)
VERBS = _split(
    "says warns signs rejects approves launches announces condemns welcomes plans eyes "
    "faces hits boosts cuts raises delays backs slams urges"
)
COMMON = _split(
    "the a an of in on at for with and to from by as after before over amid new first "
    "officials said government minister president state report week year on Friday "
    "Monday's talks deal plan move could would will not more than its their which"
)
JA = _split(
    "日本 北朝鮮 中国 韓国 米国 首相 選挙 ミサイル 地震 台風 防衛 安全保障 経済 外相 政府 国会 "
    "与党 野党 円安 株価 日銀 金利 物価 賃金 原発 電力 輸出 輸入 関税 制裁 会談 首脳 "
    "大統領 外務省 防衛省 自衛隊 発射 実験 核 演習 協定 条約 同盟 警察 裁判 事故 火災 大雨"
)
JA_PARTICLES = _split("が は を に と の で も")
KO = _split(
    "북한 일본 중국 미국 대통령 선거 미사일 지진 경제 국방 외교 정부 국회 여당 야당 환율 "
    "주가 금리 물가 임금 원전 수출 수입 관세 제재 회담 정상 외교부 국방부 군 발사 실험 "
    "핵 훈련 협정 조약 동맹 경찰 재판 사고 화재 폭우"
)
KO_PARTICLES = _split("이 가 은 는 을 를 의 에")


SYLLABLES = _split(
    "ka ro mi ta shi ven lor da nu bel tra sor qui men pha zen ol ar is ul dre gan pol "
    "mar tek vis nor sal dun bra fel gor hal jin kas lum mos nev pra rus sten tor vel wyn"
)
SUFFIXES = _split("Holdings Group Motors Energy Bank Systems Pharma Airlines Steel Foods")


def name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


class World:
    """The entities that items mention and rules follow: companies, people and towns."""

    def __init__(self, rng: random.Random, size: int = 6000) -> None:
        companies = [f"{name(rng)} {rng.choice(SUFFIXES)}" for _ in range(size // 3)]
        people = [f"{name(rng)} {name(rng)}" for _ in range(size // 3)]
        towns = [name(rng) for _ in range(size // 3)]
        self.entities = sorted(set(companies + people + towns))
        self.people = people
        self.towns = towns


def sentence(rng: random.Random, world: World, n: int) -> str:
    pool = [TOPICS, VERBS, COMMON, COMMON, COMMON, COMMON]
    words = [rng.choice(rng.choice(pool)) for _ in range(n)]
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randrange(len(words)), rng.choice(world.entities))
    if rng.random() < 0.5:
        words.insert(rng.randrange(len(words)), rng.choice(PLACES + ORGS))
    return " ".join(words).capitalize() + rng.choice([".", ".", ",", ";", " -", "'s"])


def make_item(rng: random.Random, world: World) -> dict[str, str]:
    r = rng.random()
    if r < 0.03:
        title = "".join(rng.choice(JA) + rng.choice(JA_PARTICLES) for _ in range(3))
        summary = "。".join(
            "".join(rng.choice(JA) + rng.choice(JA_PARTICLES) for _ in range(6)) for _ in range(3)
        )
    elif r < 0.05:
        title = " ".join(rng.choice(KO) + rng.choice(KO_PARTICLES) for _ in range(5))
        summary = " ".join(rng.choice(KO) + rng.choice(KO_PARTICLES) for _ in range(18))
    else:
        title = (
            f"{rng.choice(world.entities)} {rng.choice(VERBS)} {rng.choice(TOPICS)} "
            f"{rng.choice(['with', 'over', 'amid', 'after', 'in'])} {rng.choice(PLACES + ORGS)}"
        )
        summary = " ".join(
            sentence(rng, world, rng.randint(12, 24)) for _ in range(rng.randint(2, 3))
        )
        if rng.random() < 0.3:  # typographic quotes and dashes, as many feeds have
            summary = summary.replace("'", "\u2019").replace(" - ", " \u2014 ")
            title = f"\u201c{title}\u201d"
        if rng.random() < 0.1:
            summary = f"<p>{summary.replace(' and ', ' &amp; ')}</p>"
    return {"title": title, "summary": summary, "content": "", "author": "Staff"}


def make_query(rng: random.Random, world: World, aliases: list[str]) -> str:
    def entity() -> str:
        e = rng.choice(world.entities)
        return f'"{e}"' if " " in e else e

    def ors(pool: list[str], k: int) -> str:
        return "(" + " OR ".join(rng.sample(pool, k)) + ")"

    def entities(k: int) -> str:
        return "(" + " OR ".join(entity() for _ in range(k)) + ")"

    person = rng.choice(world.people)
    shapes = [
        lambda: " OR ".join(entity() for _ in range(rng.randint(2, 4))),
        lambda: f'"{person}" OR ({person.split()[-1]} AND {ors(TOPICS, 2)})',
        lambda: f"{rng.choice(PREFIXES)}* NEAR/{rng.randint(1, 5)} {entities(3)}",
        lambda: f"title:{entities(2)} -{rng.choice(TOPICS)}",
        lambda: f"{entities(2)} AND {ors(TOPICS, 3)} NOT {rng.choice(TOPICS)}",
        lambda: (
            f'"{rng.choice(world.towns)} {rng.choice(TOPICS)}" OR "{rng.choice(PREFIXES)}* '
            f'{rng.choice(world.towns)}"'
        ),
        lambda: f"{entities(2)} AND @{rng.choice(aliases)}",
        lambda: f"@{rng.choice(aliases)} NEAR/3 {entities(2)}",
        lambda: f"summary:({entity()} NEAR/2 {rng.choice(TOPICS)}) AND NOT title:{entity()}",
        lambda: f"{entity()} {rng.choice(PREFIXES)}*",
    ]
    r = rng.random()
    if r < 0.03:  # a broad topic, like the seed rules
        return f"{ors(PLACES + ORGS, 2)} AND {ors(TOPICS, 2)} AND {rng.choice(PREFIXES)}*"
    if r < 0.06:  # Japanese or Korean
        return f"{rng.choice(JA)} AND {rng.choice(JA)} OR {rng.choice(KO)} NEAR/1 {rng.choice(KO)}"
    return rng.choice(shapes)()


def make_aliases(rng: random.Random) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for i in range(20):
        members = [*rng.sample(PLACES + ORGS, 4), " ".join(rng.choice(PEOPLE))]
        members += rng.sample(JA + KO, 2)
        out[f"set{i}"] = tuple(members)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    aliases = make_aliases(rng)
    world = World(rng)
    rules = []
    for i in range(args.rules):
        query = make_query(rng, world, sorted(aliases))
        parse_query(query, aliases=aliases)  # the generator writes valid queries
        rules.append(Rule(id=f"rule-{i:04d}", name=f"rule {i}", query=query))
    items = [make_item(rng, world) for _ in range(args.items)]
    chars = sum(len(i["title"]) + len(i["summary"]) for i in items)
    print(f"{len(rules)} rules, {len(items)} items ({chars / len(items):.0f} chars each)")

    c0 = time.process_time()
    t0 = time.perf_counter()
    matcher = Matcher.compile(rules, aliases)
    t1 = time.perf_counter()
    matched = hits = 0
    for item in items:
        found = matcher.match(item, source="Bench Wire", source_tags=("wire",))
        hits += len(found)
        matched += bool(found)
    t2 = time.perf_counter()
    c2 = time.process_time()
    print(
        f"compile {t1 - t0:.3f} s; match {t2 - t1:.3f} s ({len(items) / (t2 - t1):,.0f} items/s, "
        f"{(t2 - t1) / len(items) * 1e6:.1f} us/item)"
    )
    print(
        f"total {t2 - t0:.2f} s ({c2 - c0:.2f} s of CPU); {matched:,} items matched, "
        f"{hits:,} matches ({hits / len(items):.2f} per item); target <= 5 s"
    )


if __name__ == "__main__":
    main()
