"""`pgembed ingest | sync | collections`: collections from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any

from pgembed._cli.args import (
    int_in,
    positive_int,
    read_lines,
    read_vectors,
    vectors_path,
)
from pgembed.errors import EmptyInputError, InputError


def _kinds(value: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in value.split(",") if k.strip())


def register(sub: Any) -> None:
    from pgembed.storage.schema import IVFFLAT_MAX_LISTS, KINDS

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
    ing.add_argument(
        "--kinds", type=_kinds, default=("single",), help=f"subset of {','.join(KINDS)}"
    )
    ing.add_argument("--bits", type=int_in(1, 8), default=1, help="bits per binary dimension")
    ing.add_argument(
        "--binary-index", choices=("hnsw", "ivfflat"), default="hnsw",
        help="index of the binary codes (ivfflat: ~14x smaller, rebuilt after each ingest)",
    )  # fmt: skip
    ing.add_argument(
        "--lists", type=int_in(1, IVFFLAT_MAX_LISTS), default=100,
        help="IVFFlat lists (about rows/300)",
    )  # fmt: skip
    ing.add_argument(
        "--fde-index", choices=("bit", "halfvec"), default="bit",
        help="index of the FDE (bit: ~10x smaller, same recall, slower multivector queries)",
    )  # fmt: skip
    ing.add_argument("--jsonl", action="store_true", help="input is JSON lines {id, text}")
    ing.add_argument(
        "--vectors", type=vectors_path,
        help="precomputed encoder outputs, row i for input text i: .npy pooled (n, dim), e.g. "
        "from `pgembed encode`, or .npz with pooled, tokens + token_counts (multivector, "
        "fde) and an optional fingerprint; you vouch they come from the collection's model",
    )  # fmt: skip
    ing.add_argument(
        "--mode", choices=("auto", "bulk", "incremental"), default="auto",
        help="bulk: indexes deferred and rebuilt; auto: bulk for large loads (default)",
    )  # fmt: skip
    ing.add_argument("--batch-size", type=positive_int, default=256)
    ing.add_argument("--no-progress", action="store_true")
    ing.set_defaults(func=_ingest)

    syn = sub.add_parser(
        "sync",
        help="embed rows whose text is new or changed",
        description="Embed the rows of COLLECTION that have no embedding yet or whose text "
        "changed since. Several `pgembed sync` may run at once (FOR UPDATE SKIP LOCKED).",
    )
    syn.add_argument("collection")
    syn.add_argument("--batch-size", type=positive_int, default=256)
    syn.add_argument("--no-progress", action="store_true")
    syn.set_defaults(func=_sync)

    lst = sub.add_parser("collections", help="list the collections in the catalog")
    lst.set_defaults(func=_list)


def _record(lineno: int, line: str) -> tuple[int, str]:
    """One JSON line: an object with an integer "id" and a string "text"."""
    where = f"line {lineno}"
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise InputError(f"{where} is not valid JSON ({exc}); give one object per line") from None
    if not isinstance(obj, dict) or "id" not in obj or "text" not in obj:
        raise InputError(
            f"{where} is not a JSON object with 'id' and 'text': {line[:60]!r}; "
            'give {"id": 1, "text": "..."}'
        )
    id_, text = obj["id"], obj["text"]
    if type(id_) is not int:  # not 1.7, true or "1": they would be stored as another id
        raise InputError(f"{where}: 'id' must be a JSON integer, got {id_!r}; write it as 1")
    if not isinstance(text, str):
        raise InputError(f"{where}: 'text' must be a JSON string, got {text!r}; quote it")
    return id_, text


def _pairs(path: str, jsonl: bool) -> tuple[list[int], list[str]]:
    """Ids and texts of the input, all checked before anything is created or written."""
    from pgembed.encoders.tokenize import check_texts
    from pgembed.storage.ingest import check_ids

    lines = read_lines(path)
    if jsonl:
        numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
        pairs = [_record(n, line) for n, line in numbered]
        for (n, _), (_, text) in zip(numbered, pairs, strict=True):
            try:
                check_texts([text])
            except InputError as exc:
                raise type(exc)(f"line {n}: {exc}".replace("text at index 0", "the text")) from None
        ids, texts = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        ids, texts = list(range(len(lines))), check_texts(lines)
    if not texts:
        raise EmptyInputError(
            f"no texts in {'stdin' if path == '-' else path}; give one text per line "
            "(or JSON lines with --jsonl)"
        )
    for i, text in enumerate(texts):
        if "\x00" in text:
            raise InputError(f"text of id {ids[i]} holds a NUL character; remove it")
    check_ids(ids)
    return ids, texts


def _ingest(args: argparse.Namespace) -> int:
    from pgembed import Collection, Encoder, db
    from pgembed.errors import UnknownCollectionError
    from pgembed.storage.schema import IndexParams

    ids, texts = _pairs(args.input, args.jsonl)
    vectors: Any = None
    fingerprint = None
    if args.vectors is not None:
        got = read_vectors(args.vectors)
        fingerprint = got.get("fingerprint")
        vectors = (got["pooled"], got["tokens"]) if "tokens" in got else got["pooled"]
        pooled = got["pooled"]
        if pooled is not None and len(pooled) != len(texts):
            raise InputError(
                f"--vectors {args.vectors} has {len(pooled)} rows for {len(texts)} texts; "
                "give one row per input text, in the same order"
            )
    engine = db.create_engine()
    created = False
    try:
        coll = Collection.open(engine, args.collection)
    except UnknownCollectionError:
        enc = Encoder.load(args.model)
        index = IndexParams(binary=args.binary_index, lists=args.lists, fde=args.fde_index)
        coll = Collection(
            engine, args.collection, enc, kinds=args.kinds, binary_bits=args.bits, index=index
        )
        coll.create()
        created = True
    try:
        n = coll.add(
            texts, ids, vectors=vectors, fingerprint=fingerprint, mode=args.mode,
            batch_size=args.batch_size, progress=not args.no_progress,
        )  # fmt: skip
    except BaseException:
        if created:  # leave no empty table behind; a partly filled one resumes on re-run
            with contextlib.suppress(Exception):
                coll.drop()
        raise
    print(f"{n} rows written to {args.collection} ({len(texts) - n} already up to date)")
    if n and coll.last_mode == "incremental":
        for name in coll.reindex():  # IVFFlat lists follow the data (bulk builds them)
            print(f"rebuilt index {name}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from pgembed import Collection, db

    coll = Collection.open(db.create_engine(), args.collection)
    n = coll.sync(batch_size=args.batch_size, progress=not args.no_progress)
    print(f"{n} rows embedded in {args.collection}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pgembed import db
    from pgembed.storage import catalog

    with db.create_engine().connect() as conn:
        records = catalog.list_collections(conn)
    for rec in records:
        s = rec.spec
        print(f"{s.name}\t{s.schema}.{s.table_name}\t{s.encoder}\t{','.join(s.all_kinds)}")
    return 0
