"""Checks of a sharded collection's rows and searches: one hit per id, honest counts, rows
on the wrong shard, and target_recall's calibration warnings from every shard.

A row is *misplaced* when it sits on a shard its id does not hash to (written there
directly, not through ``ShardedCollection.add``). Searches then may find its id on two
shards: the merge keeps one hit per id (the best score) and flags the others. ``count``
counts each id once; :func:`audit` lists the misplaced rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pgembed.errors import DatabaseUnavailableError, PgembedWarning
from pgembed.storage import schema as sch

if TYPE_CHECKING:
    from pgembed.shards import Shard

SHOWN = 5
"""Ids a warning names (the rest are counted)."""


_SEED = 8816678312871386365
"""PostgreSQL's HASH_PARTITION_SEED, the seed of hash partitioning's hashint8extended."""
_COMBINE = 5305509591434766563
"""hash_combine64's constant: the row hash of one key is the key's hash plus this (mod 2^64)."""


def home_of(id_: Any, shard_count: int) -> Any:
    """``pgembed.shard_of(id, shard_count)`` written out, so that the planner computes it
    inline (a function with a pinned search_path is called row by row, four times slower)."""
    u64 = sa.literal(2**64, sa.Numeric)
    h = sa.cast(
        sa.func.pg_catalog.hashint8extended(id_, sa.literal(_SEED, sa.BigInteger)), sa.Numeric
    )
    rows = (
        (h + sa.literal(2**64 + _COMBINE, sa.Numeric)) % u64 % sa.literal(shard_count, sa.Numeric)
    )
    return sa.cast(rows, sa.Integer)


class ShardPlacementWarning(PgembedWarning):
    """Rows of a sharded collection sit on a shard their id does not hash to."""


def merge(per_shard: list[list[Any]], k: int, seen_twice: set[int]) -> list[tuple[int, float]]:
    """The top k of every shard's top k, by score, ties by id (as the SQL functions), one
    hit per id: its best. Ids found more than once go to ``seen_twice``."""
    merged = [(int(i), float(sc)) for rows in per_shard for i, sc in rows]
    merged.sort(key=lambda h: (-h[1], h[0]))
    out: list[tuple[int, float]] = []
    kept: set[int] = set()
    for hit in merged:
        if hit[0] in kept:
            seen_twice.add(hit[0])
        else:
            kept.add(hit[0])
            out.append(hit)
    return out[:k]


def warn_seen_twice(name: str, ids: set[int]) -> None:
    listed = ", ".join(str(i) for i in sorted(ids)[:SHOWN])
    warnings.warn(
        f"sharded collection {name!r}: {len(ids)} id(s) were found on more than one shard "
        f"({listed}{', ...' if len(ids) > SHOWN else ''}); each is returned once, with its "
        "best score. A row sits on a shard its id does not hash to: ShardedCollection.verify() "
        "lists them",
        ShardPlacementWarning,
        stacklevel=3,
    )


@dataclass(frozen=True)
class Misplaced:
    id: int
    shard: int
    """Position of the shard that holds the row."""
    home: int
    """Position of the shard its id hashes to."""
    at_home: bool
    """The home shard holds a row of this id too."""


@dataclass
class Audit:
    """Rows per shard that belong there (``placed``, by position) and those that do not."""

    placed: list[int]
    misplaced: list[Misplaced] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.misplaced

    @property
    def rows(self) -> int:
        """Distinct ids: what searches can return."""
        return sum(self.placed) + len({m.id for m in self.misplaced if not m.at_home})


def audit(shards: Sequence[Shard], spec: sch.CollectionSpec) -> Audit:
    """Every shard's rows checked against its position (``pgembed.shard_of``), all shards at
    once; the misplaced ids looked up on their own shards. A shard without the collection's
    table counts 0 rows. ShardError names a shard that does not answer."""
    from pgembed.shards import _fan_out, _raise_failed

    n = len(shards)
    t = sch.table(spec, sa.MetaData())
    id_ = t.c[spec.id_column]
    home = home_of(id_, n)

    def look(s: Shard) -> tuple[int, list[int], list[int]]:
        with s.engine.connect() as conn:
            if not sa.inspect(conn).has_table(t.name, schema=t.schema):
                return 0, [], []
            by_home = sa.select(home, sa.func.count()).group_by(sa.literal_column("1"))
            per: dict[int, int] = {int(h): int(c) for h, c in conn.execute(by_home)}
            if set(per) <= {s.position}:  # the usual case: one scan
                return int(per.get(s.position, 0)), [], []
            wrong = conn.execute(sa.select(id_, home).where(home != s.position).order_by(id_))
            got = wrong.all()
        return int(per.get(s.position, 0)), [int(r[0]) for r in got], [int(r[1]) for r in got]

    found, failed = _fan_out(shards, look)
    _raise_failed(shards, failed, f"count {spec.name!r}")
    wanted: dict[int, set[int]] = {}
    for _, ids, homes in found:
        for i, h in zip(ids, homes, strict=True):
            wanted.setdefault(h, set()).add(i)

    def at_home(s: Shard) -> set[int]:
        ids = sorted(wanted.get(s.position, ()))
        if not ids:
            return set()
        with s.engine.connect() as conn:
            if not sa.inspect(conn).has_table(t.name, schema=t.schema):
                return set()
            got = conn.execute(
                sa.select(id_).where(
                    id_ == sa.func.any(sa.bindparam("ids", ids, type_=pg.ARRAY(sa.BigInteger)))
                )
            )
            return {int(i) for i in got.scalars()}

    there, failed = _fan_out(shards, at_home)
    _raise_failed(shards, failed, f"count {spec.name!r}")
    misplaced = [
        Misplaced(i, s.position, h, i in there[h])
        for s in shards
        for i, h in zip(found[s.position][1], found[s.position][2], strict=True)
    ]
    return Audit([f[0] for f in found], misplaced)


def warn_misplaced(shards: Sequence[Shard], name: str, result: Audit) -> None:
    if result.ok:
        return
    wrong = result.misplaced
    listed = ", ".join(
        f"id {m.id} on {shards[m.shard].label}, belongs on shard {m.home}" for m in wrong[:SHOWN]
    )
    twice = sum(m.at_home for m in wrong)
    warnings.warn(
        f"sharded collection {name!r}: {len(wrong)} row(s) sit on a shard their id does not "
        f"hash to ({listed}{'; ...' if len(wrong) > SHOWN else ''}), {twice} of them also on "
        "their own shard; the count takes each id once. Searches may return them with stale "
        "text: delete them on the shard that holds them wrongly (ShardedCollection.verify() "
        "lists them) and write them again through ShardedCollection.add",
        ShardPlacementWarning,
        stacklevel=3,
    )


def warn_calibration(
    shards: Sequence[Shard], spec: sch.CollectionSpec, strategy: str, options: dict[str, Any]
) -> None:
    """target_recall: the CalibrationWarnings each shard's calibration gives (no
    calibration, a weak prefix, a stale one), as one warning each naming the shards. A
    shard that cannot be reached is left to the search, which reports it."""
    from pgembed import calibration

    said: dict[str, list[str]] = {}
    for s in shards:  # warnings are caught per thread only: one shard at a time
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with s.engine.connect() as conn:
                    calibration.check_target(conn, spec, strategy, options)
            except sa.exc.DBAPIError as exc:
                from pgembed.db import error_for

                err = error_for(exc, spec.name)
                if err is not None and not isinstance(err, DatabaseUnavailableError):
                    raise err from None
                continue
        for w in caught:
            if issubclass(w.category, calibration.CalibrationWarning):
                said.setdefault(str(w.message), []).append(s.label)
            else:
                warnings.warn(w.message, w.category, stacklevel=2)
    for message, where in said.items():
        on = "every shard" if len(where) == len(shards) else ", ".join(where)
        warnings.warn(f"{message} (on {on})", calibration.CalibrationWarning, stacklevel=4)
