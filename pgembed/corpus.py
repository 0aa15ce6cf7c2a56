"""Real text that ships in a package, for the quickstart, tests and benchmarks.

gensim's wheel carries an English Wikipedia sample (``gensim/test/test_data/enwiki-*``,
about 100 articles). Each article is cleaned of wiki markup and split into passages of
about ``words`` words; its lead sentence is held out as a known-item query whose relevant
passages are those of its article. No network is needed.
"""

from __future__ import annotations

import bz2
import re
from dataclasses import dataclass
from pathlib import Path

from pgembed.errors import ConfigError

_MARKUP = re.compile(r"'{2,}|\[\[|\]\]|\{\{|\}\}|&nbsp;|<[^>]+>")
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_HEADING = re.compile(r"^=+[^=]+=+$")


@dataclass(frozen=True)
class Passage:
    id: int
    article: int
    title: str
    text: str


@dataclass(frozen=True)
class Query:
    article: int
    title: str
    text: str


@dataclass(frozen=True)
class Corpus:
    passages: list[Passage]
    queries: list[Query]


def _gensim_data() -> Path:
    try:
        import gensim
    except ImportError:
        raise ConfigError(
            "the Wikipedia sample ships in gensim's wheel: pip install 'pgembed[quickstart]'"
        ) from None
    return Path(gensim.__file__).parent / "test" / "test_data"


def _clean_paragraphs(wikitext: str) -> list[str]:
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(wikitext)
    out = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or _HEADING.match(line):
            continue
        line = _SPACES.sub(" ", _MARKUP.sub("", line)).strip()
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line).replace(" ,", ",")
        if len(line.split()) >= 8:  # drops captions, list stubs and table debris
            out.append(line)
    return out


def wikipedia(
    *, words: int = 100, max_articles: int | None = None, min_passages: int = 2
) -> Corpus:
    """Passages of the gensim Wikipedia sample and one lead-sentence query per article."""
    from gensim.corpora.wikicorpus import extract_pages

    path = next(_gensim_data().glob("enwiki-latest-pages-articles1.xml-*-shortened.bz2"))
    passages: list[Passage] = []
    queries: list[Query] = []
    with bz2.open(path) as fh:
        for title, text, _ in extract_pages(fh):
            if ":" in title or text.lstrip().lower().startswith("#redirect"):
                continue
            paragraphs = _clean_paragraphs(text)
            if not paragraphs:
                continue
            lead, *rest = _SENTENCE_END.split(paragraphs[0], maxsplit=1)
            body = " ".join(rest + paragraphs[1:]).split()
            chunks = [" ".join(body[i : i + words]) for i in range(0, len(body), words)]
            chunks = [c for c in chunks if len(c.split()) >= words // 4]
            if len(lead.split()) < 5 or len(chunks) < min_passages:
                continue
            article = len(queries)
            queries.append(Query(article, title, lead))
            passages.extend(
                Passage(len(passages) + j, article, title, c) for j, c in enumerate(chunks)
            )
            if max_articles is not None and len(queries) >= max_articles:
                break
    return Corpus(passages, queries)


def lee_background() -> list[str]:
    """The 300 news documents of gensim's ``lee_background.cor``, one per line."""
    lines = (_gensim_data() / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]
