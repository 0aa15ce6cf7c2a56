"""`pgembed search`: a text query against a collection, with the text of each hit."""

from __future__ import annotations

import argparse
import json
import shutil
from typing import Any

from pgembed import strategies
from pgembed._cli.args import add_search_args


def register(sub: Any) -> None:
    sea = sub.add_parser(
        "search",
        help="search a collection with a text query",
        description="Encode QUERY with the collection's model and print the k best rows: "
        "rank, id, score and a one-line snippet of the row's text.",
        epilog="--json prints one JSON object per line, best first: "
        '{"rank": 1, "id": 42, "score": 0.83, "text": "..."}, with the full text '
        "(null when the collection stores no text).",
    )
    add_search_args(sea)
    sea.add_argument(
        "--json", action="store_true", help="one JSON object per line: rank, id, score, text"
    )
    sea.set_defaults(func=_search)


def snippet(text: str | None, width: int) -> str:
    """``text`` on one line (whitespace folded), cut to ``width`` characters with an ellipsis."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(width - 1, 0)].rstrip() + "…"


def _search(args: argparse.Namespace) -> int:
    from pgembed import Collection, db
    from pgembed.storage import read

    given = {name: getattr(args, name) for name in strategies.OPTIONS}
    opts = {name: v for name, v in given.items() if v is not None}
    strategies.check_options(args.strategy, opts, k=args.k)  # before a model loads
    engine = db.create_engine()
    coll = Collection.open(engine, args.collection)
    hits = coll.search(args.query, k=args.k, strategy=args.strategy, **opts)
    texts = read.texts(engine, coll.spec, [id_ for id_, _ in hits])
    width = shutil.get_terminal_size((80, 24)).columns
    for rank, (id_, score) in enumerate(hits, 1):
        text = texts[id_]
        if args.json:
            print(json.dumps({"rank": rank, "id": id_, "score": score, "text": text}))
        else:
            head = f"{rank:>3}  {id_:>10}  {score:.4f}"
            print(f"{head}  {snippet(text, max(width - len(head) - 3, 20))}".rstrip())
    return 0
