"""Where a sharded collection's rows live, recorded on every shard and checked.

A row lives on the shard its id hashes to (PostgreSQL's hash partitioning, modulus the
number of shards), so a shard list given in another order or with another number of
shards reads and writes rows where they do not belong. Each shard records, in the
transaction that creates its part of the collection, the placement it belongs to
(``pgembed.shard_placement``, revision 0008): a placement id drawn when the sharded
collection is first created, its position, the number of shards, the hash layout, and
the identity of the database at each position. The coordinator records the placement id.
A create or open whose shard list disagrees with what the shards record is refused
(:class:`PlacementError`) before any shard changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from pgembed.errors import CollectionError
from pgembed.storage import schema as sch

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from pgembed.shards import Shard

LAYOUT = "postgres-hash-int8/1"
"""Rows by PostgreSQL's hash partitioning of the bigint id (``pgembed.shard_of``)."""


class PlacementError(CollectionError):
    """A shard list disagrees with the placement the shards or the coordinator record."""


class _Lost(PlacementError):
    """A shard lost its part of a collection recorded before placements were."""


@dataclass(frozen=True)
class Record:
    """One shard's record of the placement it belongs to."""

    placement: str
    position: int
    shard_count: int
    layout: str
    members: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"position {self.position} of {self.shard_count} shards of placement "
            f"{self.placement} ({self.layout})"
        )


@dataclass(frozen=True)
class Survey:
    """What a shard holds of a collection before it is created or opened there."""

    identity: str
    record: Record | None
    holds: bool
    """The shard's catalog records the collection."""
    rows: bool
    """Its table holds rows."""


def identity(conn: Connection) -> str:
    """The database's identity: its cluster's system identifier and its database oid."""
    row = conn.execute(
        sa.text(
            "SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system()), "
            "(SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
        )
    ).one()
    return f"{row[0]}/{row[1]}"


def read(conn: Connection, name: str) -> Record | None:
    row = conn.execute(
        sa.text(
            "SELECT placement::text, position, shard_count, layout, members "
            "FROM pgembed.shard_placement WHERE collection = :n"
        ),
        {"n": name},
    ).first()
    if row is None:
        return None
    return Record(str(row[0]), int(row[1]), int(row[2]), str(row[3]), tuple(row[4]))


def survey(conn: Connection, spec: sch.CollectionSpec) -> Survey:
    holds = conn.execute(
        sa.text("SELECT 1 FROM pgembed.collections WHERE name = :n"), {"n": spec.name}
    ).scalar()
    rows = False
    if holds and sa.inspect(conn).has_table(spec.table_name, schema=spec.schema):
        t = sch.table(spec, sa.MetaData())
        rows = bool(
            conn.execute(sa.select(sa.exists(sa.select(sa.literal(1)).select_from(t)))).scalar()
        )
    return Survey(identity(conn), read(conn, spec.name), bool(holds), rows)


def coordinator_state(conn: Connection, name: str) -> tuple[bool, str | None]:
    """Whether the coordinator records collection ``name``, and its placement id (None:
    recorded before placements were, or not recorded)."""
    row = conn.execute(
        sa.text("SELECT placement::text FROM pgembed.sharded_collections WHERE name = :n"),
        {"n": name},
    ).first()
    return row is not None, None if row is None else row[0]


def _fix(name: str) -> str:
    return (
        f"rows are placed by id hash over the shard list, so another order or number of "
        f"shards would put them where searches and counts do not look. Open the collection "
        f"from the coordinator that created it (ShardedCollection.open(engine, {name!r})) or "
        "declare the shards as recorded; to change the number of shards, create a new "
        "collection and copy the rows into it"
    )


_STALE = (
    "Beware: ShardedCollection.drop on a coordinator drops every shard's part too, rows "
    "included; drop it only when no shard holds rows you keep"
)


def _order(rec: Record, shards: Sequence[Shard], surveys: Sequence[Survey]) -> str:
    """The recorded order of shards, named by the declared URLs where they match."""
    from pgembed.shards import mask

    by_id = {sv.identity: mask(s.url) for s, sv in zip(shards, surveys, strict=True)}
    return "[" + ", ".join(by_id.get(m, "a database not in this list") for m in rec.members) + "]"


def decide(
    name: str,
    shards: Sequence[Shard],
    surveys: Sequence[Survey],
    coordinator: tuple[bool, str | None],
) -> str:
    """The placement id a create of ``shards`` takes: the one the shards record, else a new
    one. PlacementError when the shards record another placement, disagree, or hold rows
    of the collection that no placement records."""
    n = len(shards)
    members = [sv.identity for sv in surveys]
    for s, sv in zip(shards, surveys, strict=True):
        twin = next(t for t, o in zip(shards, surveys, strict=True) if o.identity == sv.identity)
        if twin is not s:
            raise PlacementError(
                f"{twin.label} and {s.label} are the same database (identity {sv.identity}); "
                "give each shard once. A database copied from another shares its identity "
                "only if it was copied file by file: give each shard its own database"
            )
    recorded_on, want = coordinator
    found = {sv.record.placement for sv in surveys if sv.record is not None}
    for s, sv in zip(shards, surveys, strict=True):
        rec = sv.record
        if rec is None:
            continue
        if (rec.position, rec.shard_count, rec.layout) != (s.position, n, LAYOUT):
            raise PlacementError(
                f"{s.label} already holds collection {name!r} as {rec.describe()}, but this "
                f"declaration puts it at position {s.position} of {n} shards ({LAYOUT}); the "
                f"recorded order is {_order(rec, shards, surveys)}. Nothing was changed; "
                + _fix(name)
            )
        if want is not None and rec.placement != want:
            raise PlacementError(
                f"{s.label} holds collection {name!r} as {rec.describe()}, but this "
                f"coordinator records placement {want}: the shard was created again by "
                "another declaration, and this coordinator's entry is stale. Nothing was "
                f"changed; " + _fix(name) + ". " + _STALE
            )
    if len(found) > 1:
        seen = "; ".join(
            f"{s.label}: {sv.record.describe()}"
            for s, sv in zip(shards, surveys, strict=True)
            if sv.record is not None
        )
        raise PlacementError(
            f"the shards record different placements of collection {name!r} ({seen}); they "
            "were created by different declarations. Nothing was changed; " + _fix(name)
        )
    placement = found.pop() if found else want
    known = next((sv.record for sv in surveys if sv.record is not None), None)
    legacy = recorded_on and want is None
    for s, sv in zip(shards, surveys, strict=True):
        if sv.record is not None:
            continue
        if known is not None and known.members[s.position] != members[s.position]:
            raise PlacementError(
                f"{s.label} is declared at position {s.position} of collection {name!r}, "
                f"which the other shards record as {known.describe()} with another database "
                f"at that position; the recorded order is {_order(known, shards, surveys)}. "
                "Nothing was changed; " + _fix(name)
            )
        if sv.rows and not legacy:
            raise PlacementError(
                f"{s.label} holds rows of collection {name!r} that no sharded placement "
                "records (a collection created there directly, or by another declaration); "
                "nothing was changed. Drop it on that shard, or use another name"
            )
    return placement or str(uuid.uuid4())


def write(
    conn: Connection, name: str, placement: str, position: int, members: Sequence[str]
) -> Record:
    """Record ``placement`` on a shard, inside the transaction that creates its part (after
    it: the record goes with the collection's catalog row). Under a lock, so that two
    creators cannot both see no record; refuses one that disagrees."""
    conn.execute(
        sa.text("SELECT pg_catalog.pg_advisory_xact_lock(hashtext('pgembed.shard_placement'), "
                "hashtext(:n))"),
        {"n": name},
    )  # fmt: skip
    want = Record(placement, position, len(members), LAYOUT, tuple(members))
    rec = read(conn, name)
    if rec is None:
        conn.execute(
            sa.text(
                "INSERT INTO pgembed.shard_placement (collection, placement, position, "
                "shard_count, layout, members) VALUES (:n, CAST(:p AS uuid), :i, :c, :l, "
                "CAST(:m AS text[]))"
            ),
            {"n": name, "p": placement, "i": position, "c": len(members), "l": LAYOUT,
             "m": list(members)},
        )  # fmt: skip
        return want
    if (rec.placement, rec.position, rec.shard_count, rec.layout) != (
        want.placement, want.position, want.shard_count, want.layout,
    ):  # fmt: skip
        raise PlacementError(
            f"collection {name!r} was placed meanwhile by another declaration: this shard "
            f"records {rec.describe()}, not {want.describe()}; " + _fix(name)
        )
    return rec


def create(
    shards: Sequence[Shard],
    spec: sch.CollectionSpec,
    coordinator: tuple[bool, str | None],
    make: Callable[[Shard, Connection], Any] | None,
) -> tuple[str, list[Any]]:
    """Create a collection's parts with their placement records: every shard surveyed
    (refused, nothing changed, when they record another placement), then ``make(shard,
    conn)`` and the record in one transaction per shard, the first shard before the others
    (two concurrent creators meet there). Returns the placement id and what ``make``
    returned per shard. ``make=None`` records the placement of parts that exist."""
    from pgembed.shards import _fan_out, _raise_failed

    def look(s: Shard) -> Survey:
        with s.engine.connect() as conn:
            return survey(conn, spec)

    surveys, failed = _fan_out(shards, look)
    _raise_failed(shards, failed, f"read the placement of {spec.name!r}")
    placement = decide(spec.name, shards, surveys, coordinator)
    members = [sv.identity for sv in surveys]

    def put(s: Shard) -> Any:
        with s.engine.connect() as conn, conn.begin():
            made = make(s, conn) if make is not None else None
            if (
                make is None
                and not conn.execute(
                    sa.text("SELECT 1 FROM pgembed.collections WHERE name = :n"), {"n": spec.name}
                ).scalar()
            ):
                raise _Lost(f"{s.label} no longer holds collection {spec.name!r}")
            write(conn, spec.name, placement, s.position, members)
            return made

    # The first shard alone, then the others: two creators at once meet at the first.
    made, failed = _fan_out(shards[:1], put)
    _raise_failed(shards, failed, f"create collection {spec.name!r}")
    rest, failed = _fan_out(shards, lambda s: made[0] if s.position == 0 else put(s))
    _raise_failed(shards, failed, f"create collection {spec.name!r}",
                  "; the shards that answered keep their part: run the same create again "
                  "once the shard is back")  # fmt: skip
    return placement, rest


def check(
    shards: Sequence[Shard],
    name: str,
    placement: str,
    *,
    reachable_only: bool,
    done: frozenset[int] = frozenset(),
) -> set[int]:
    """Every shard (but those ``done``) records ``placement`` at its position, or
    PlacementError naming it. A shard that holds nothing of the collection (it lost its
    part) is left to the calls that need it. Returns the positions checked, ``done``
    included (all of them unless ``reachable_only``)."""
    from pgembed.shards import _fan_out, _raise_failed

    def look(s: Shard) -> tuple[Record | None, bool, str] | None:
        if s.position in done:
            return None
        with s.engine.connect() as conn:
            held = conn.execute(
                sa.text("SELECT 1 FROM pgembed.collections WHERE name = :n"), {"n": name}
            ).scalar()
            return read(conn, name), bool(held), identity(conn)

    found, failed = _fan_out(shards, look)
    if not reachable_only:
        _raise_failed(shards, failed, f"read the placement of {name!r}")
    n = len(shards)
    asked = [s for s in shards if s.position not in failed and s.position not in done]
    members = next(
        (f[0].members for s in asked if (f := found[s.position])[0] is not None
         and f[0].placement == placement and f[0].shard_count == n),
        None,
    )  # fmt: skip
    for s in asked:
        rec, held, ident = found[s.position]
        if rec is None and not held:
            continue
        if rec is None and (n == 1 or (members is not None and members[s.position] == ident)):
            # a part from before its record (the shard went below 0008 and back): the
            # other shards' records name this database at this position
            with s.engine.connect() as conn, conn.begin():
                write(conn, name, placement, s.position, members or (ident,))
            continue
        if rec is None or (rec.placement, rec.position, rec.shard_count, rec.layout) != (
            placement, s.position, n, LAYOUT,
        ):  # fmt: skip
            what = "no placement" if rec is None else rec.describe()
            raise PlacementError(
                f"{s.label} holds collection {name!r} as {what}, but the coordinator "
                f"records it at position {s.position} of {n} shards of placement {placement}; "
                "the shard was created again by another declaration, or the coordinator's "
                "shard list was changed. Open the collection from the coordinator that placed "
                "it. " + _STALE
            )
    return {s.position for s in shards if s.position not in failed}


def adopt(coordinator: Engine, shards: Sequence[Shard], spec: sch.CollectionSpec) -> None:
    """A collection recorded before placements were: record one on every shard and on the
    coordinator (left as it was while a shard cannot be reached or lost its part)."""
    from pgembed.errors import PgembedError

    try:
        placement, _ = create(shards, spec, (True, None), None)
    except _Lost:
        return
    except PlacementError:
        raise
    except PgembedError:  # a shard is down: next time
        return
    with coordinator.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE pgembed.sharded_collections SET placement = CAST(:p AS uuid) "
                "WHERE name = :n AND placement IS NULL"
            ),
            {"p": placement, "n": spec.name},
        )


def same_shards(conn: Connection, name: str, shards: Sequence[Shard]) -> None:
    """The coordinator records collection ``name`` over exactly ``shards``, in their order,
    or PlacementError (before any shard changes)."""
    from pgembed.shards import mask, shard_urls, without_password

    recorded = shard_urls(conn, name)
    if [without_password(u) for u in recorded] != [without_password(s.url) for s in shards]:
        raise PlacementError(
            f"sharded collection {name!r} is recorded on this coordinator over shards "
            f"[{', '.join(mask(u) for u in recorded)}], not "
            f"[{', '.join(mask(s.url) for s in shards)}]; open it as recorded with "
            f"ShardedCollection.open(engine, {name!r}), or drop it first"
        )


def ensure(
    coordinator: Engine,
    shards: Sequence[Shard],
    spec: sch.CollectionSpec,
    *,
    reachable_only: bool,
    done: frozenset[int] = frozenset(),
) -> set[int]:
    """The checks of ``ShardedCollection.open`` for a collection object built with its
    shard list: the coordinator records these shards, and each (but those ``done``)
    records the coordinator's placement (a collection recorded before placements adopts
    one). Returns the positions checked."""
    with coordinator.connect() as conn:
        same_shards(conn, spec.name, shards)
        _, placement = coordinator_state(conn, spec.name)
    if placement is None:
        adopt(coordinator, shards, spec)
        with coordinator.connect() as conn:
            _, placement = coordinator_state(conn, spec.name)
        if placement is None:
            return set(done)
    return check(shards, spec.name, placement, reachable_only=reachable_only, done=done)
