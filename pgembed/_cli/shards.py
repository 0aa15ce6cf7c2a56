"""`pgembed shards create | ingest | search | list`: collections sharded over several servers.

The database of PGEMBED_DATABASE_URL (or the embedded server) is the coordinator.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

from pgembed import strategies
from pgembed._cli.args import add_search_args, positive_int


def _kinds(value: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in value.split(",") if k.strip())


def register(sub: Any) -> None:
    from pgembed.storage.schema import KINDS

    top = sub.add_parser(
        "shards",
        help="collections sharded over several servers",
        description="A sharded collection is an ordinary collection on each shard server; "
        "the coordinator (this database) records the shards and fans searches out to all "
        "of them at once.",
    )
    cmds = top.add_subparsers(dest="shards_command", required=True)

    cre = cmds.add_parser("create", help="create a sharded collection on every shard")
    cre.add_argument("collection")
    cre.add_argument(
        "--shard", dest="shards", action="append", required=True, metavar="URL",
        help="a shard's database URL (repeat once per shard; the order is the hash order)",
    )  # fmt: skip
    cre.add_argument("--model", default="all-minilm-l6-v2", help="encoder of the collection")
    cre.add_argument(
        "--kinds", type=_kinds, default=("single",), help=f"subset of {','.join(KINDS)}"
    )
    cre.set_defaults(func=_create)

    ing = cmds.add_parser(
        "ingest",
        help="encode texts into a sharded collection, every shard at once",
        description="Read texts (one per line, or JSON lines with 'id' and 'text'), place each "
        "on the shard of its id's hash, and write all shards at once. Re-running resumes.",
    )
    ing.add_argument("collection")
    ing.add_argument("input", nargs="?", default="-", help="file, or - for stdin")
    ing.add_argument("--jsonl", action="store_true", help="input is JSON lines {id, text}")
    ing.add_argument("--mode", choices=("auto", "bulk", "incremental"), default="auto")
    ing.add_argument("--batch-size", type=positive_int, default=256)
    ing.set_defaults(func=_ingest)

    sea = cmds.add_parser("search", help="search every shard at once, best hits first")
    add_search_args(sea)
    sea.add_argument(
        "--allow-partial", action="store_true",
        help="answer from the shards that respond; a warning names the missing ones",
    )  # fmt: skip
    sea.add_argument("--timeout-ms", type=positive_int, help="statement timeout per shard")
    sea.add_argument("--json", action="store_true", help="one JSON object per line")
    sea.set_defaults(func=_search)

    lst = cmds.add_parser("list", help="list the sharded collections and their shards")
    lst.set_defaults(func=_list)


def _create(args: argparse.Namespace) -> int:
    from pgembed import Encoder, db
    from pgembed.shards import ShardedCollection, check_url, mask

    for url in args.shards:  # before a model loads
        check_url(url)
    enc = Encoder.load(args.model)
    coll = ShardedCollection(
        db.create_engine(), args.collection, enc, shards=args.shards, kinds=args.kinds
    )
    coll.create().dispose()
    for s in coll.shards:
        print(f"shard {s.position}\t{mask(s.url)}")
    print(f"created sharded collection {args.collection} on {len(coll.shards)} shards")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from pgembed import db
    from pgembed._cli.collections import _pairs
    from pgembed.shards import ShardedCollection

    ids, texts = _pairs(args.input, args.jsonl)
    coll = ShardedCollection.open(db.create_engine(), args.collection)
    try:
        n = coll.add(texts, ids, mode=args.mode, batch_size=args.batch_size, progress=False)
    finally:
        coll.dispose()
    print(f"{n} rows written to {args.collection} ({len(texts) - n} already up to date)")
    return 0


def _search(args: argparse.Namespace) -> int:
    from pgembed import db
    from pgembed._cli.search import snippet
    from pgembed.link_roles import naming_shards
    from pgembed.shards import ShardedCollection
    from pgembed.storage import read

    given = {name: getattr(args, name, None) for name in strategies.OPTIONS}
    opts = {name: v for name, v in given.items() if v is not None}
    strategies.check_options(args.strategy, opts, k=args.k)  # before a model loads
    engine = db.create_engine()
    extra = {} if args.timeout_ms is None else {"timeout_ms": args.timeout_ms}
    coll = ShardedCollection.open(engine, args.collection, **extra)
    try:
        hits = coll.search(
            args.query, k=args.k, strategy=args.strategy, allow_partial=args.allow_partial, **opts
        )
    finally:
        coll.dispose()
    if hits.partial:
        print(f"pgembed: warning: partial results, missing {'; '.join(hits.missing)}",
              file=sys.stderr)  # fmt: skip
        texts: dict[int, str | None] = {i: None for i, _ in hits}
    else:  # through the coordinator's parent table: plain SQL over every shard
        with naming_shards(coll.spec.name, coll.shards):  # a shard postgres_fdw cannot reach
            texts = read.texts(engine, coll.spec, [i for i, _ in hits])
    width = shutil.get_terminal_size((80, 24)).columns
    for rank, (id_, score) in enumerate(hits, 1):
        if args.json:
            line = {"rank": rank, "id": id_, "score": score, "text": texts[id_]}
            print(json.dumps({**line, "partial": hits.partial}))
        else:
            head = f"{rank:>3}  {id_:>10}  {score:.4f}"
            print(f"{head}  {snippet(texts[id_], max(width - len(head) - 3, 20))}".rstrip())
    return 0


def _list(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from pgembed import db
    from pgembed.shards import _require_catalog, mask

    with db.create_engine().connect() as conn:
        _require_catalog(conn)
        rows = conn.execute(
            sa.text("SELECT collection, position, url FROM pgembed.shards ORDER BY 1, 2")
        ).all()
    for name, position, url in rows:
        print(f"{name}\tshard {position}\t{mask(url)}")
    return 0
