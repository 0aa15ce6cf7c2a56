"""`pgembed ingest | sync | search | collections`: collections from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from pgembed.errors import InputError

_KINDS = "single,matryoshka,binary,fde,multivector"


def _kinds(value: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in value.split(",") if k.strip())


def register(sub: Any) -> None:
    ing = sub.add_parser(
        "ingest",
        help="encode texts into a collection (creates it if needed)",
        description="Read texts (one per line, or JSON lines with 'id' and 'text') and upsert "
        "them by id. Re-running an interrupted ingest resumes: rows already embedded from "
        "the same text are skipped.",
    )
    ing.add_argument("collection")
    ing.add_argument("input", nargs="?", default="-", help="file, or - for stdin")
    ing.add_argument("--model", default="all-minilm-l6-v2", help="encoder for a new collection")
    ing.add_argument("--kinds", type=_kinds, default=("single",), help=f"subset of {_KINDS}")
    ing.add_argument("--bits", type=int, default=1, help="bits per dimension of binary codes")
    ing.add_argument(
        "--binary-index", choices=("hnsw", "ivfflat"), default="hnsw",
        help="index of the binary codes (ivfflat: ~14x smaller, rebuilt after each ingest)",
    )  # fmt: skip
    ing.add_argument("--lists", type=int, default=100, help="IVFFlat lists (about rows/300)")
    ing.add_argument("--jsonl", action="store_true", help="input is JSON lines {id, text}")
    ing.add_argument("--batch-size", type=int, default=256)
    ing.add_argument("--no-progress", action="store_true")
    ing.set_defaults(func=_ingest)

    syn = sub.add_parser(
        "sync",
        help="embed rows whose text is new or changed",
        description="Embed the rows of COLLECTION that have no embedding yet or whose text "
        "changed since. Several `pgembed sync` may run at once (FOR UPDATE SKIP LOCKED).",
    )
    syn.add_argument("collection")
    syn.add_argument("--batch-size", type=int, default=256)
    syn.add_argument("--no-progress", action="store_true")
    syn.set_defaults(func=_sync)

    sea = sub.add_parser("search", help="search a collection with a text query")
    sea.add_argument("collection")
    sea.add_argument("query")
    sea.add_argument("-k", type=int, default=10)
    sea.add_argument(
        "--strategy", choices=("knn", "funnel", "binary", "multivector"), default="knn"
    )
    sea.add_argument("--oversample", type=int)
    sea.add_argument("--candidates", type=int)
    sea.add_argument("--ef-search", type=int, help="HNSW search breadth")
    sea.add_argument("--probes", type=int, help="IVFFlat lists to probe (binary strategy)")
    sea.add_argument("--json", action="store_true", help="print JSON lines")
    sea.set_defaults(func=_search)

    lst = sub.add_parser("collections", help="list the collections in the catalog")
    lst.set_defaults(func=_list)


def _read(path: str, jsonl: bool) -> Iterator[tuple[int, str]]:
    with open(
        sys.stdin.fileno() if path == "-" else path, encoding="utf-8", closefd=path != "-"
    ) as fh:
        for lineno, line in enumerate(fh):
            line = line.rstrip("\n")
            if jsonl:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    yield int(obj["id"]), str(obj["text"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise InputError(
                        f"line {lineno + 1} is not a JSON object with 'id' and 'text': {exc}"
                    ) from None
            else:
                yield lineno, line


def _ingest(args: argparse.Namespace) -> int:
    from pgembed import Collection, Encoder, db
    from pgembed.errors import UnknownCollectionError
    from pgembed.storage.schema import IndexParams

    pairs = list(_read(args.input, args.jsonl))
    engine = db.create_engine()
    try:
        coll = Collection.open(engine, args.collection)
    except UnknownCollectionError:
        enc = Encoder.load(args.model)
        index = IndexParams(binary=args.binary_index, lists=args.lists)
        coll = Collection(
            engine, args.collection, enc, kinds=args.kinds, binary_bits=args.bits, index=index
        )
        coll.create()
    n = coll.add(
        [t for _, t in pairs],
        [i for i, _ in pairs],
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(f"{n} rows written to {args.collection} ({len(pairs) - n} already up to date)")
    if n:
        for name in coll.reindex():  # IVFFlat lists follow the data
            print(f"rebuilt index {name}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from pgembed import Collection, db

    coll = Collection.open(db.create_engine(), args.collection)
    n = coll.sync(batch_size=args.batch_size, progress=not args.no_progress)
    print(f"{n} rows embedded in {args.collection}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from pgembed import Collection, db

    coll = Collection.open(db.create_engine(), args.collection)
    opts = {
        k: v
        for k, v in (
            ("oversample", args.oversample),
            ("candidates", args.candidates),
            ("ef_search", args.ef_search),
            ("probes", args.probes),
        )
        if v is not None
    }
    for rank, (id_, score) in enumerate(
        coll.search(args.query, k=args.k, strategy=args.strategy, **opts), 1
    ):
        if args.json:
            print(json.dumps({"rank": rank, "id": id_, "score": score}))
        else:
            print(f"{rank:>3}  {id_:>10}  {score:.4f}")
    return 0


def _list(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from pgembed import db
    from pgembed.storage import catalog
    from pgembed.storage.schema import KINDS

    with db.create_engine().connect() as conn:
        rows = conn.execute(
            sa.select(catalog.collections.c.name, catalog.collections.c.table_schema,
                      catalog.collections.c.table_name, catalog.collections.c.encoder,
                      catalog.collections.c.kinds).order_by("name")
        ).all()  # fmt: skip
    for name, schema, table, encoder, kinds in rows:
        ordered = ",".join(k for k in KINDS if k in kinds)
        print(f"{name}\t{schema}.{table}\t{encoder}\t{ordered}")
    return 0
