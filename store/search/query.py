"""The search query language, and the one tokenizer both backends index and query with.

Grammar (what people type into a search box, in the spirit of websearch_to_tsquery):

* ``redis cache`` — every term must match (AND);
* ``"in memory"`` — a phrase: the words adjacent, in order;
* ``-alpine`` / ``-"old version"`` — exclusion;
* ``redis OR valkey`` — either (binds tighter than AND: ``a OR b c`` = ``(a | b) & c``);
* ``red*`` — prefix (at least two characters); with ``as_you_type`` the last word is one;
* names: ``acme/redis-ha`` is split on ``/ - _ .`` (and anything not a letter or digit)
  into the phrase ``acme redis ha``, which is how names are indexed.

Nothing the user types reaches a full-text engine verbatim: the parser keeps only tokens of
letters and digits and renders them quoted, so FTS syntax characters are inert.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from store.errors import StoreError

MAX_QUERY_CHARS = 256
MAX_PHRASES = 16
MAX_TOKEN_CHARS = 64
MIN_PREFIX_CHARS = 2

_WORD = re.compile(r"[^\W_]+")


class BadQuery(StoreError):
    status_code = 400
    code = "bad_query"


def fold(text: str) -> str:
    """Lower-case, compatibility-normalised, without diacritics ("Ünïcode" → "unicode")."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.casefold()


def tokenize(text: str, *, limit: int | None = None) -> list[str]:
    """The tokens of a text: runs of letters and digits, folded, at most 64 characters."""
    tokens = [t[:MAX_TOKEN_CHARS] for t in _WORD.findall(fold(text))]
    return tokens if limit is None else tokens[:limit]


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    # Imported on first use (≈ 3 MiB): a worker that only serves /token never stems.
    import snowballstemmer

    return snowballstemmer.stemmer("english")


# Parts of a mixed-case word: "PGVault" → PG, Vault; "PostgreSQL" → Postgre, SQL.
_CASE_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_MIXED = re.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]")


# Large enough for the vocabulary of a million documents: a full reindex stems every word
# of every document. snowballstemmer uses PyStemmer's C stemmers (a dependency: the same
# stems, ≈ 15 times faster than its pure-Python ones).
@lru_cache(maxsize=1 << 18)
def stem(token: str) -> str:
    """The English (Snowball) stem of a folded token: "running" → "run", "highly" → "high".
    Tokens with digits are kept as they are ("k8s", "v2")."""
    if not token.isalpha() or not token.isascii():
        return token
    return str(_stemmer().stemWord(token))


def index_text(text: str, *, limit: int | None = None) -> str:
    """The indexed form of a field: its tokens, then the extra tokens that make it findable
    by other forms of its words: the parts of mixed-case words ("PGVault" → pg, vault) and
    the stems of the words ("available" → avail). Extras come after the text, so phrases of
    the text keep their positions."""
    tokens = tokenize(text, limit=limit)
    seen = set(tokens)
    extras: list[str] = []

    def add(token: str) -> None:
        if token and token not in seen:
            seen.add(token)
            extras.append(token)

    source = text if limit is None else " ".join(text.split()[:limit])
    # A mixed-case pattern is letters only, so it never spans two words: a text without one
    # has no mixed-case word (most texts: the per-word check was a fifth of a reindex).
    words = _WORD.findall(source) if _MIXED.search(source) else ()
    for word in words:
        if _MIXED.search(word):
            parts = [fold(p) for p in _CASE_PART.findall(word)]
            if len(parts) > 1:
                for part in parts:
                    add(part[:MAX_TOKEN_CHARS])
                    add(stem(part[:MAX_TOKEN_CHARS]))
    # Each distinct token once, in order of first occurrence: a repeated token's stem is
    # already there (the same extras, in the same order, as stemming every occurrence).
    for token_stem in map(stem, dict.fromkeys(tokens)):
        if token_stem not in seen:
            seen.add(token_stem)
            extras.append(token_stem)
    return " ".join(tokens + extras)


TextJob = tuple[str, int | None]  # a field's text and its token limit (index_text's)


def index_texts(jobs: Sequence[TextJob]) -> list[str]:
    """index_text of each (text, limit): documents are built with this over all the texts of
    a batch, so a full reindex can hand whole batches to worker processes."""
    return [index_text(text, limit=limit) for text, limit in jobs]


@dataclass(frozen=True)
class Phrase:
    tokens: tuple[str, ...]
    prefix: bool = False  # the last token is a prefix


@dataclass
class Query:
    # AND of groups; each group an OR of phrases.
    groups: list[list[Phrase]] = field(default_factory=list)
    excluded: list[Phrase] = field(default_factory=list)
    # The folded query when it is a single bare name ("redis", "acme/redis-ha"): documents
    # named exactly so rank first.
    exact_name: str | None = None

    @property
    def empty(self) -> bool:
        return not self.groups

    def terms(self) -> set[str]:
        """Tokens to highlight in results."""
        return {t for g in self.groups for p in g for t in p.tokens}

    def prefixes(self) -> set[str]:
        return {p.tokens[-1] for g in self.groups for p in g if p.prefix}


_LEXER = re.compile(r'\s*(?:(-?)"([^"]*)"?(\*?)|(\S+))')
_EXACT = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$")


def parse(text: str, *, as_you_type: bool = False) -> Query:
    """Parse a query; BadQuery (400) when it is too long or has nothing to look for."""
    if len(text) > MAX_QUERY_CHARS:
        raise BadQuery(f"The query is longer than {MAX_QUERY_CHARS} characters")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    query = Query()
    pending_or = False
    items = list(_LEXER.finditer(text))
    for index, match in enumerate(items):
        negated, quoted, star, bare = match.groups()
        also: Phrase | None = None  # an alternative to the phrase (the last word's stem)
        if bare is not None:
            if bare == "OR":
                pending_or = bool(query.groups)
                continue
            negated = "-" if bare.startswith("-") and len(bare) > 1 else ""
            word = bare[1:] if negated else bare
            star = "*" if word.endswith("*") else ""
            tokens = tokenize(word.rstrip("*"))
            is_last = index == len(items) - 1 and not text[match.end() :].strip()
            if as_you_type and is_last and not text.endswith(" "):
                star = "*"
            if len(tokens) == 1 and not word.endswith("*"):
                # A single word matches its other forms: documents index the stems of
                # their words (index_text), so "runs", "running" and "run" meet at "run".
                # A last word still being typed is a prefix, or its stem: "postgres" finds
                # "postgresql", "runs" finds "running", "redis" does not find "redirect".
                stemmed = stem(tokens[0])
                if star and stemmed != tokens[0] and len(tokens[0]) >= MIN_PREFIX_CHARS:
                    also = Phrase((stemmed,))
                tokens = tokens if star else [stemmed]
        else:
            tokens = tokenize(quoted)
        if not tokens:
            continue
        prefix = bool(star) and len(tokens[-1]) >= MIN_PREFIX_CHARS
        phrase = Phrase(tuple(tokens), prefix)
        if negated:
            if phrase not in query.excluded:
                query.excluded.append(phrase)
        elif pending_or:
            for p in (phrase, also):
                if p is not None and p not in query.groups[-1]:
                    query.groups[-1].append(p)
        else:
            query.groups.append([phrase] if also is None else [phrase, also])
        pending_or = False
    # "redis redis" is "redis": a repeated word would only make the engines intersect a
    # posting list with itself (and look rarer to PostgreSQL's estimate than it is).
    unique: list[list[Phrase]] = []
    for group in query.groups:
        if group not in unique:
            unique.append(group)
    query.groups = unique
    if len(query.groups) + len(query.excluded) > MAX_PHRASES:
        raise BadQuery(f"Use at most {MAX_PHRASES} words or phrases")
    if query.excluded and not query.groups:
        raise BadQuery("Say what to look for, not only what to leave out")
    bare_text = fold(text.strip())
    # One word or name (with its stem as the alternative of a last word typed).
    group = query.groups[0] if len(query.groups) == 1 else []
    one = len(group) == 1 or (
        len(group) == 2 and group[0].prefix and group[1] == Phrase((stem(group[0].tokens[0]),))
    )
    single = one and not query.excluded
    if single and _EXACT.match(bare_text):
        query.exact_name = bare_text
    return query


# --- rendering for the engines ---------------------------------------------------------

# Field tiers: a document's tier is the highest one whose fields alone satisfy the query.
TIER_FIELDS = {
    3: ("fts_name",),
    2: ("fts_name", "fts_title"),
    1: ("fts_name", "fts_title", "fts_summary"),
    0: ("fts_name", "fts_title", "fts_summary", "fts_body"),
}
TIER_WEIGHTS = {3: "A", 2: "AB", 1: "ABC", 0: ""}


# A 2-character prefix matches words of names and titles only ("re" finds the listing named
# "redis-ha", not every document with "release" in its description), or the 2-character word
# itself anywhere: typing two letters is looking for a name. Both backends: SQLite restricts
# the prefix to those columns, PostgreSQL indexes the 2-character prefix of the words of
# names and titles only (HEAD_PREFIX).
HEAD_PREFIX = 2
HEAD_FIELDS = ("fts_name", "fts_title")


def head_prefix(p: Phrase) -> bool:
    """A phrase ending in a 2-character prefix: matched in names and titles only."""
    return p.prefix and len(p.tokens[-1]) == HEAD_PREFIX


def _fts5_phrase(p: Phrase) -> str:
    body = '"' + " ".join(p.tokens).replace('"', '""') + '"'
    if head_prefix(p):
        return f"({body} OR {{{' '.join(HEAD_FIELDS)}}} : {body}*)"
    return body + ("*" if p.prefix else "")


def fts5_text(query: Query, tier: int, *, excluded: bool = True) -> str | None:
    """The text part of an FTS5 MATCH expression restricted to a tier's fields (tier None:
    no column filter); ``excluded=False`` leaves the exclusions out."""
    if query.empty:
        return None

    def phrase(p: Phrase) -> str:
        # Anywhere (tier 0) means every text column: a prefix must not reach the facet
        # tokens ("pr"* would match every document priced "pr:paid"). Words cannot (no
        # word holds a ":"), and the column filter costs a look at each match's positions.
        if tier == 0 and p.prefix and not head_prefix(p):
            return f"({{{' '.join(TIER_FIELDS[0])}}} : {_fts5_phrase(p)})"
        return _fts5_phrase(p)

    groups = " AND ".join(
        "(" + " OR ".join(phrase(p) for p in group) + ")" for group in query.groups
    )
    expr = f"({{{' '.join(TIER_FIELDS[tier])}}} : ({groups}))" if tier else f"({groups})"
    if excluded:
        for p in query.excluded:
            expr += f" NOT ({{{' '.join(TIER_FIELDS[0])}}} : {_fts5_phrase(p)})"
    return expr


def fts5_excluded(query: Query) -> str | None:
    """The excluded phrases ORed (a document matching this is excluded), or None."""
    if not query.excluded:
        return None
    cols = " ".join(TIER_FIELDS[0])
    return f"({{{cols}}} : (" + " OR ".join(_fts5_phrase(p) for p in query.excluded) + "))"


def fts5_tokens(tokens: list[str], *, any_of: bool = False) -> str:
    """facet tokens (AND, or OR with any_of) restricted to the facets column."""
    joined = (" OR " if any_of else " AND ").join(f'"{t}"' for t in tokens)
    return f"(fts_facets : ({joined}))"


def _lexeme(token: str, weights: str = "", prefix: bool = False) -> str:
    escaped = token.replace("\\", "\\\\").replace("'", "''")
    suffix = ("*" if prefix else "") + weights
    return f"'{escaped}'" + (f":{suffix}" if suffix else "")


# PostgreSQL indexes the 3-character prefix of every word as a lexeme of its own ("*:red"):
# a tsquery prefix ('re':*) is expanded inside the GIN index to every lexeme it starts, the
# union of their posting lists, in every statement of a search (SQLite has prefix='2 3' for
# the same reason). A 2-character prefix matches names and titles only (head_prefix): the
# 2-character prefix of every word of names and titles is a lexeme too ("*:re", with those
# words' positions in names and titles only), and a 2-character prefix is the word itself or
# that lexeme, ('re' | '*:re'). A prefix lexeme holds no word character's place: ":" is
# never part of a word.
PREFIX_MARK = "*:"
SHORT_PREFIXES = (3,)


def short_prefix(token: str) -> bool:
    return len(token) <= SHORT_PREFIXES[-1]


# Prefix → the lexemes of the index it starts (tsquery_prefix_key), when the caller looked
# them up: the prefix is then asked for as those lexemes, not as a partial match.
Expansions = Mapping[str, Sequence[str]]


def tsquery_prefix_key(token: str) -> str | None:
    """What a prefix token is matched against by a partial match in a tsquery: the token
    itself (4 characters or more), or nothing (2 or 3 characters: one prefix lexeme,
    matched exactly)."""
    return None if short_prefix(token) else token


def _ts_partial(key: str, weights: str, expansions: Expansions | None) -> str:
    lexemes = expansions.get(key) if expansions else None
    if not lexemes:
        return _lexeme(key, weights, True)
    if len(lexemes) == 1:
        return _lexeme(lexemes[0], weights)
    return "(" + " | ".join(_lexeme(x, weights) for x in lexemes) + ")"


def _ts_short_prefix(token: str, weights: str, expansions: Expansions | None) -> str:
    if len(token) == SHORT_PREFIXES[0]:
        return _lexeme(PREFIX_MARK + token, weights)
    return f"({_lexeme(token, weights)} | {_lexeme(PREFIX_MARK + token, weights)})"


# Common grams (PostgreSQL's "anywhere" tsvector): a pair of adjacent words both in the
# index's vocabulary of common words (search_fts_common) is a lexeme of its own, and so is a
# common word followed by a word whose 3-character prefix lexeme is common ("alpha" then
# "*:bet"). A phrase of two common words is then asked for as that lexeme AND the phrase: the
# GIN scan's candidates are the documents holding the pair, not every document holding both
# words, and the phrase is still checked on them (so matches are the same). The lexeme is a
# 24-bit hash of the pair, "~:" and 4 base-64 characters (7 bytes with its length, where
# "~:alpha *:bet" took 14: grams are ≈ 17 lexemes per bench document): two pairs of one hash
# only add candidates, which the phrase check removes. Like the prefix lexemes, a gram holds
# ":" and no user's word does.
GRAM_MARK = "~:"


@lru_cache(maxsize=1 << 16)
def gram(first: str, second: str) -> str:
    digest = hashlib.blake2b(f"{first} {second}".encode(), digest_size=3).digest()
    return GRAM_MARK + base64.b64encode(digest).decode()


def gram_pairs(p: Phrase) -> list[tuple[str, str]]:
    """The adjacent pairs of a phrase a gram can stand for: each word and the next, the last
    one, when typed as a prefix of 3 characters or more, as its 3-character prefix lexeme
    (a 2-character prefix has none)."""
    pairs = []
    last = len(p.tokens) - 1
    for i in range(last):
        second = p.tokens[i + 1]
        if i + 1 == last and p.prefix:
            if len(second) < SHORT_PREFIXES[0]:
                continue
            second = PREFIX_MARK + second[: SHORT_PREFIXES[0]]
        pairs.append((p.tokens[i], second))
    return pairs


def _ts_phrase(
    p: Phrase,
    weights: str,
    expansions: Expansions | None,
    common: Collection[str] | None = None,
) -> str:
    parts = [_lexeme(t, weights) for t in p.tokens]
    if p.prefix and short_prefix(p.tokens[-1]):
        parts[-1] = _ts_short_prefix(p.tokens[-1], weights, expansions)
    elif p.prefix:
        parts[-1] = _ts_partial(p.tokens[-1], weights, expansions)
    phrase = "(" + " <-> ".join(parts) + ")"
    if common:
        grams = [gram(a, b) for a, b in gram_pairs(p) if a in common and b in common]
        if grams:
            return "(" + " & ".join([*(_lexeme(g) for g in grams), phrase]) + ")"
    return phrase


def tsquery_text(
    query: Query,
    weights: str = "",
    *,
    excluded: bool = True,
    expansions: Expansions | None = None,
    common: Collection[str] | None = None,
) -> str | None:
    """The text part of a PostgreSQL tsquery, its lexemes restricted to ``weights``;
    ``excluded=False`` leaves the exclusions out. A prefix found in ``expansions`` is asked
    for as the lexemes listed there (all the index holds that start with it). With
    ``common`` (the words and prefix lexemes of the vocabulary of common words the queried
    tsvector was built with), a phrase also requires the grams of its pairs of them."""
    if query.empty:
        return None
    groups = " & ".join(
        "(" + " | ".join(_ts_phrase(p, weights, expansions, common) for p in group) + ")"
        for group in query.groups
    )
    if excluded:
        for p in query.excluded:
            groups += f" & !{_ts_phrase(p, '', expansions)}"
    return f"({groups})"


def tsquery_excluded(query: Query, expansions: Expansions | None = None) -> str | None:
    """The excluded phrases ORed (a document matching this is excluded), or None."""
    if not query.excluded:
        return None
    return "(" + " | ".join(_ts_phrase(p, "", expansions) for p in query.excluded) + ")"


def tsquery_tokens(tokens: list[str], *, any_of: bool = False) -> str:
    return "(" + (" | " if any_of else " & ").join(_lexeme(t) for t in tokens) + ")"
