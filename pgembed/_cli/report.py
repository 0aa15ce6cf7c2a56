"""`pgembed quickstart` and `pgembed stats`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pgembed._cli.args import int_in, positive_int


def register(sub: Any) -> None:
    q = sub.add_parser(
        "quickstart",
        help="build a collection with every kind from a real corpus and measure each strategy",
        description="Start or reuse the database, export the default model if needed, ingest "
        "the Wikipedia sample shipped in gensim (every vector kind) and search it with every "
        "strategy, using each article's lead sentence as a known-item query.",
    )
    q.add_argument(
        "--articles", type=positive_int, help="limit the number of articles (default: all)"
    )
    q.add_argument("--out", type=Path, default=Path("quickstart-out"), help="PNG and JSON here")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_quickstart)

    s = sub.add_parser("stats", help="health report of a collection")
    s.add_argument("collection")
    s.add_argument("--sample", type=int_in(1, 10**6), default=100, help="rows used as queries")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_stats)


def _quickstart(args: argparse.Namespace) -> int:
    from pgembed import quickstart

    results = quickstart.run(
        max_articles=args.articles, out_dir=args.out, progress=not args.no_progress
    )
    print(quickstart.format_table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quickstart.json").write_text(json.dumps(quickstart.as_dicts(results), indent=1))
    print(f"plot: {args.out / 'quickstart.png'}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from pgembed import Collection, db, stats

    st = stats.collect(Collection.open(db.create_engine(), args.collection), sample=args.sample)
    print(json.dumps(st.as_dict()) if args.json else stats.format_stats(st))
    return 0
