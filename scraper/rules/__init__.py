"""Rule files and the query language.

load_rules(folder) -> RuleSet           rules/*.yaml and rules/_aliases.yaml, validated
parse_query(text, aliases=...) -> Query  the query language's syntax tree
Matcher.compile(rules, aliases)          every rule, compiled for one pass per item
matcher.match(fields, source=...)        -> [Match(rule, fields, terms)]
backtest(conn, rule_or_query, rules=...) what a rule would have matched in the archive
highlight_spans(text, terms)             where to emphasise the matched terms
"""

from scraper.rules.backtest import BacktestItem, BacktestResult, backtest
from scraper.rules.cron import Cron, CronError, parse_cron
from scraper.rules.loader import RuleSet, load_rules, parse_aliases, parse_rule
from scraper.rules.matcher import Matcher
from scraper.rules.query import Query, parse_query
from scraper.rules.text import highlight_spans, normalise, words

__all__ = [
    "BacktestItem",
    "BacktestResult",
    "Cron",
    "CronError",
    "Matcher",
    "Query",
    "RuleSet",
    "backtest",
    "highlight_spans",
    "load_rules",
    "normalise",
    "parse_aliases",
    "parse_cron",
    "parse_query",
    "parse_rule",
    "words",
]
