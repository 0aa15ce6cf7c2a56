"""`pgembed grant | revoke`: what a role may do with one collection."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    for verb, doc in (
        ("grant", "give ROLE what reading (--read) or also writing (--write) COLLECTION needs"),
        ("revoke", "take back a grant: --write the write privileges, --read all of them"),
    ):
        p = sub.add_parser(
            verb,
            help=doc,
            description=f"{doc[0].upper()}{doc[1:]}: USAGE on schema pgembed, EXECUTE on its "
            "functions, SELECT on its catalog, the collection's table and side tables; "
            "writing adds INSERT, UPDATE and DELETE on them and on the collection's "
            "calibration rows. Run it as the collection's owner or a superuser.",
        )
        p.add_argument("role")
        p.add_argument("collection")
        access = p.add_mutually_exclusive_group()
        access.add_argument(
            "--read", dest="access", action="store_const", const="read",
            help="reading (the default); for revoke: everything grant gave",
        )  # fmt: skip
        access.add_argument(
            "--write", dest="access", action="store_const", const="write",
            help="writing too; for revoke: the write privileges only",
        )  # fmt: skip
        p.set_defaults(func=_run, verb=verb, access="read")


def _run(args: argparse.Namespace) -> int:
    from pgembed import db
    from pgembed.storage import grants

    act = grants.grant if args.verb == "grant" else grants.revoke
    for stmt in act(db.create_engine(), args.role, args.collection, args.access):
        print(stmt)
    return 0
