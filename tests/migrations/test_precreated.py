"""Objects that another role created before pgembed did are refused, never adopted (pgembed.trust).

Catalog-driven: pgembed is installed at head (scoring extension wired) and at 0001 in
reference databases, and every object it created in its schemas is read from pg_catalog
(pg_namespace, pg_class, pg_proc, pg_type; the extension's members through pg_depend).
Then an untrusted role, a non-superuser that owns the database, plants them:
- in a fresh database, one per schema and object class: the schema and every object of the
  class in it, same names and signatures, before the superuser's first upgrade;
- in a database at 0001 where the role was granted CREATE on schema pgembed and TRIGGER on
  its tables: every object that a later revision creates, and a trigger on every table;
- at head, with CREATE granted on every schema of pgembed's: an overload of every function
  in it, before the superuser wires the scoring functions again.
Each time the superuser's upgrade (or wire) is refused with a TrustError naming every
planted object, and no planted function ran: each records its calls in a table that stays
empty (a positive control shows that a call does record).

The role plants through SET ROLE on a superuser connection, as tests/sql/test_capture.py
does: the objects are created with exactly its privileges.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from pgembed import migrate, scoring, trust
from pgembed.errors import TrustError

_SCHEMAS = """
SELECT n.oid, n.nspname FROM pg_namespace n
WHERE n.nspname = ANY(:s) OR n.oid = (SELECT extnamespace FROM pg_extension WHERE extname = :e)
"""
_RELATIONS = """
SELECT c.relkind::text, c.relname::text, c.oid::regclass::text, c.oid FROM pg_class c
WHERE c.relnamespace = :ns AND c.relkind <> 'c' ORDER BY c.relname
"""
_FUNCTIONS = """
SELECT p.proname::text, p.oid::regprocedure::text, pg_get_function_arguments(p.oid),
       pg_get_function_result(p.oid), p.proretset OR 'o' = ANY(coalesce(p.proargmodes, '{}'))
       OR p.prorettype = 'void'::regtype
FROM pg_proc p WHERE p.pronamespace = :ns ORDER BY 2
"""
# Every type, row types and array types included: each is a name another role can take.
_TYPES = """
SELECT t.typname::text, quote_ident(:schema) || '.' || quote_ident(t.typname) FROM pg_type t
WHERE t.typnamespace = :ns ORDER BY 1
"""
_COLUMNS = """
SELECT quote_ident(attname), format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = :rel AND attnum > 0 AND NOT attisdropped ORDER BY attnum
"""
_MEMBERS = """
SELECT pg_describe_object(d.classid, d.objid, 0) FROM pg_depend d JOIN pg_extension e
ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
WHERE e.extname = :e AND d.deptype = 'e' ORDER BY 1
"""


@dataclass(frozen=True)
class Obj:
    kind: str  # as pgembed.trust names it: table, sequence, index, function, type
    schema: str
    label: str  # "kind name", as pgembed.trust prints it
    plant: tuple[str, ...]  # statements creating it, run as the untrusted role


@dataclass
class Installed:
    schemas: list[str]
    objects: list[Obj]
    members: list[str]  # the scoring extension's, as pg_describe_object prints them


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _body(label: str, returns_nothing: bool, trigger: bool = False) -> str:
    ret = "RETURN NULL" if trigger or not returns_nothing else "RETURN"
    return (
        f"LANGUAGE plpgsql AS $p$BEGIN INSERT INTO public.fired VALUES "
        f"('{label.replace(chr(39), chr(39) * 2)}'); {ret}; END$p$"
    )


def _trigger(table: str, tag: str) -> tuple[str, ...]:
    """A statement trigger on ``table`` (qualified) calling a recording function in public."""
    fn = f"public.planted_trigger_{tag}"
    return (
        f"CREATE FUNCTION {fn}() RETURNS trigger {_body('trigger ' + table, False, True)}",
        f"CREATE TRIGGER planted AFTER INSERT OR UPDATE OR DELETE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    )


def read_installed(engine: Engine) -> Installed:
    """Every object pgembed created in its schemas, with the statements that pre-create it."""
    objects: list[Obj] = []
    with engine.connect() as conn:
        schemas = conn.execute(
            sa.text(_SCHEMAS), {"s": list(trust.SCHEMAS), "e": scoring.EXTENSION}
        ).all()
        for ns, schema in schemas:
            s = _q(schema)
            for n, (kind, name, label, oid) in enumerate(
                conn.execute(sa.text(_RELATIONS), {"ns": ns}).all()
            ):
                if kind == "r":
                    cols = ", ".join(
                        f"{c} {t}" for c, t in conn.execute(sa.text(_COLUMNS), {"rel": oid}).all()
                    )
                    plant = (f"CREATE TABLE {s}.{_q(name)} ({cols})", *_trigger(label, f"t{n}"))
                    objects.append(Obj("table", schema, f"table {label}", plant))
                elif kind == "S":
                    plant = (f"CREATE SEQUENCE {s}.{_q(name)}",)
                    objects.append(Obj("sequence", schema, f"sequence {label}", plant))
                elif kind == "i":
                    host = f"{s}.planted_index_host"
                    plant = (
                        f"CREATE TABLE IF NOT EXISTS {host} (x integer)",
                        f"CREATE INDEX {_q(name)} ON {host} (x)",
                    )
                    objects.append(Obj("index", schema, f"index {label}", plant))
                else:
                    raise AssertionError(f"relkind {kind} of {label}: teach this test to plant it")
            for name, label, args, result, nothing in conn.execute(
                sa.text(_FUNCTIONS), {"ns": ns}
            ).all():
                create = (
                    f"CREATE FUNCTION {s}.{_q(name)}({args}) RETURNS {result} "
                    f"{_body('function ' + label, nothing)}"
                )
                objects.append(Obj("function", schema, f"function {label}", (create,)))
            for name, label in conn.execute(sa.text(_TYPES), {"ns": ns, "schema": schema}):
                plant = (f"CREATE TYPE {s}.{_q(name)} AS (x integer)",)
                objects.append(Obj("type", schema, f"type {label}", plant))
        members = list(conn.execute(sa.text(_MEMBERS), {"e": scoring.EXTENSION}).scalars())
    return Installed([str(s) for _, s in schemas], objects, members)


@pytest.fixture(scope="module")
def installed(built: Path, make_database: Any) -> Installed:
    """pgembed at head with the scoring extension wired (built for the test server)."""
    eng = sa.create_engine(make_database(), poolclass=NullPool)
    try:
        migrate.upgrade(eng)
        return read_installed(eng)
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def at_0001(make_database: Any) -> Installed:
    eng = sa.create_engine(make_database(), poolclass=NullPool)
    try:
        migrate.upgrade(eng, "0001")
        return read_installed(eng)
    finally:
        eng.dispose()


# --- databases owned by an untrusted role ---------------------------------------------------


@dataclass
class Site:
    engine: Engine  # superuser, in the database the role owns
    owner: str


@contextlib.contextmanager
def owned_database(admin_url: str) -> Iterator[Site]:
    """A fresh database owned by a fresh non-superuser LOGIN role; pgvector created by the
    superuser (in public), and public.fired, where planted functions record their calls."""
    tag = uuid.uuid4().hex[:10]
    owner, db = f"pgembed_pre_owner_{tag}", f"pgembed_pre_{tag}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{owner}" LOGIN NOSUPERUSER NOCREATEROLE'))
        conn.execute(sa.text(f'CREATE DATABASE "{db}" OWNER "{owner}"'))
    url = make_url(admin_url).set(database=db).render_as_string(hide_password=False)
    eng = sa.create_engine(url, poolclass=NullPool)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION vector"))
        site = Site(eng, owner)
        with as_owner(site) as conn:
            conn.execute(sa.text("CREATE TABLE public.fired (what text)"))
            conn.execute(sa.text("GRANT INSERT ON public.fired TO PUBLIC"))
        yield site
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{owner}"'))
        admin.dispose()


@contextlib.contextmanager
def as_owner(site: Site) -> Iterator[sa.Connection]:
    with site.engine.begin() as conn:
        conn.execute(sa.text(f'SET LOCAL ROLE "{site.owner}"'))
        assert not conn.execute(
            sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        ).scalar_one()
        conn.execute(sa.text("SET LOCAL check_function_bodies = off"))
        yield conn


def plant(site: Site, objects: list[Obj], schemas: tuple[str, ...] | list[str] = ()) -> None:
    with as_owner(site) as conn:
        for schema in schemas:
            conn.execute(sa.text(f"CREATE SCHEMA {_q(schema)}"))
        for obj in objects:
            for stmt in obj.plant:
                conn.execute(sa.text(stmt))


def fired(site: Site) -> list[str]:
    with site.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT what FROM public.fired")).scalars())


def refused(exc: TrustError, owner: str, labels: list[str]) -> None:
    """Every label is named in the refusal, with the owner; the message names the first."""
    named = {o.split(" (owner ")[0]: o for o in exc.objects}
    missing = [label for label in labels if label not in named]
    assert not missing, (missing, exc.objects)
    assert all(f"(owner {owner})" in named[label] for label in labels)
    assert exc.objects[0] in str(exc) and "DROP SCHEMA" in str(exc)


def owned_by(site: Site, schema: str) -> set[str]:
    """Owners of the objects in ``schema`` (the schema's included)."""
    with site.engine.connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = :s "
                    "UNION SELECT relowner::regrole::text FROM pg_class "
                    "WHERE relnamespace = to_regnamespace(:s) "
                    "UNION SELECT proowner::regrole::text FROM pg_proc "
                    "WHERE pronamespace = to_regnamespace(:s)"
                ),
                {"s": schema},
            ).scalars()
        )


# --- the tests -----------------------------------------------------------------------------


def test_the_catalog_holds_every_schema_and_object_class(installed: Installed) -> None:
    """Coverage: both schemas, every class, and every member of the scoring extension."""
    assert set(installed.schemas) == {"pgembed", scoring.EXTENSION}
    kinds = {(o.schema, o.kind) for o in installed.objects}
    assert {("pgembed", k) for k in ("table", "sequence", "index", "function", "type")} <= kinds
    assert (scoring.EXTENSION, "function") in kinds
    labels = {o.label for o in installed.objects}
    assert {"table pgembed.alembic_version", "table pgembed.calibrations"} <= labels
    planted_members = [m for m in installed.members if f"function {scoring.EXTENSION}." in m]
    assert len(planted_members) == len(installed.members) > 0  # only functions
    for member in installed.members:
        assert member in labels, member


@pytest.mark.parametrize("schema", trust.SCHEMAS)
def test_a_precreated_schema_and_its_objects_are_refused(
    installed: Installed, admin_url: str, schema: str
) -> None:
    """The role creates the schema, and every object of one class that pgembed has there
    (one database per class), before the superuser's first upgrade: refused before any
    DDL, naming each of them; nothing of pgembed's is made, no planted function runs."""
    kinds = sorted({o.kind for o in installed.objects if o.schema == schema})
    for kind in [None, *kinds]:  # None: the empty schema alone
        objects = [o for o in installed.objects if o.schema == schema and o.kind == kind]
        with owned_database(admin_url) as site:
            plant(site, objects, [schema])
            with pytest.raises(TrustError) as exc:
                migrate.upgrade(site.engine)
            refused(exc.value, site.owner, [f"schema {schema}"] + [o.label for o in objects])
            assert exc.value.objects[0].endswith("pgembed did not create it"), kind
            assert fired(site) == [], kind
            assert owned_by(site, schema) == {site.owner}, kind
            with site.engine.connect() as conn:
                assert (
                    conn.execute(
                        sa.text("SELECT count(*) FROM pg_extension WHERE extname = :e"),
                        {"e": scoring.EXTENSION},
                    ).scalar_one()
                    == 0
                )
                assert conn.execute(sa.text("SELECT to_regnamespace(:s)"), {"s": "pgembed"}
                                    ).scalar() is None or schema == "pgembed"  # fmt: skip
            if kind == "function":
                _positive_control(site, schema)


def _positive_control(site: Site, schema: str) -> None:
    """A planted function does record when the superuser calls it (rolled back)."""
    with site.engine.begin() as conn:
        fn, args = conn.execute(
            sa.text(
                "SELECT p.oid::regproc::text, array_to_string(ARRAY(SELECT 'NULL::' || "
                "format_type(t, NULL) FROM unnest(p.proargtypes) AS t), ', ') FROM pg_proc p "
                "WHERE p.pronamespace = to_regnamespace(:s) AND NOT EXISTS (SELECT 1 FROM "
                "unnest(p.proargtypes) AS t JOIN pg_type y ON y.oid = t WHERE y.typtype = 'p') "
                "ORDER BY p.oid LIMIT 1"
            ),
            {"s": schema},
        ).one()
        conn.execute(sa.text(f"SELECT {fn}({args})"))
        assert len(conn.execute(sa.text("SELECT what FROM public.fired")).all()) == 1
        conn.rollback()


def test_objects_of_later_revisions_precreated_in_a_granted_schema_are_refused(
    installed: Installed, at_0001: Installed, admin_url: str
) -> None:
    """pgembed at 0001; the role, granted CREATE on schema pgembed and TRIGGER on its
    tables, creates every object a later revision adds and a trigger on every table."""
    there = {o.label for o in at_0001.objects}
    later = [o for o in installed.objects if o.schema == "pgembed" and o.label not in there]
    # a later table brings its row type and array type: those names are taken by it
    tables_later = {o.label.removeprefix("table pgembed.") for o in later if o.kind == "table"}
    taken = {f"type pgembed.{p}{t}" for t in tables_later for p in ("", "_")}
    later = [o for o in later if o.label not in taken]
    assert {o.kind for o in later} >= {"table", "index", "function"}
    tables = [o.label.removeprefix("table ") for o in at_0001.objects if o.kind == "table"]
    with owned_database(admin_url) as site:
        migrate.upgrade(site.engine, "0001")
        with site.engine.begin() as conn:
            conn.execute(sa.text(f'GRANT USAGE, CREATE ON SCHEMA pgembed TO "{site.owner}"'))
            for table in tables:
                conn.execute(sa.text(f'GRANT TRIGGER ON {table} TO "{site.owner}"'))
        triggers = [
            Obj("trigger", "pgembed", f"trigger planted on {t}", _trigger(t, f"g{n}"))
            for n, t in enumerate(tables)
        ]
        plant(site, later + triggers)
        with pytest.raises(TrustError) as exc:
            migrate.upgrade(site.engine)
        refused(exc.value, site.owner, [o.label for o in later])
        for t in triggers:
            assert any(o.startswith(t.label + " calling") for o in exc.value.objects), t.label
        assert fired(site) == []
        assert migrate.current(site.engine) == "0001"  # a plain table: read, nothing ran


def _overload(create: str) -> str:
    """The CREATE FUNCTION statement with a leading parameter more: another signature."""
    head, args = create.split("(", 1)
    extra = "planted_extra bytea" + ("" if args.startswith(")") else ", ")
    return f"{head}({extra}{args}"


def test_overloads_planted_in_granted_schemas_refuse_wiring(admin_url: str, built: Path) -> None:
    """At head (wired), the role granted CREATE on pgembed's schemas adds an overload of every
    function there: wire() refuses before it touches anything, and so does the upgrade."""
    with owned_database(admin_url) as site:
        migrate.upgrade(site.engine)
        head = read_installed(site.engine)
        with site.engine.begin() as conn:
            for schema in head.schemas:
                conn.execute(
                    sa.text(f'GRANT USAGE, CREATE ON SCHEMA {_q(schema)} TO "{site.owner}"')
                )
        overloads = [
            Obj("function", o.schema, o.label, (_overload(o.plant[0]),))
            for o in head.objects
            if o.kind == "function"
        ]
        with site.engine.connect() as conn:
            before = scoring.status_lines(conn)
        plant(site, overloads)
        with site.engine.connect() as conn:
            labels = [
                f"function {p}"
                for p in conn.execute(
                    sa.text(
                        "SELECT oid::regprocedure::text FROM pg_proc WHERE proowner = "
                        "to_regrole(:o) AND pronamespace = ANY(CAST(:s AS regnamespace[]))"
                    ),
                    {"o": site.owner, "s": head.schemas},
                ).scalars()
            ]
        assert len(labels) == len(overloads)
        for call in (lambda: scoring.wire(site.engine), lambda: migrate.upgrade(site.engine)):
            with pytest.raises(TrustError) as exc:
                call()
            refused(exc.value, site.owner, labels)
        assert fired(site) == []
        with site.engine.connect() as conn:
            assert scoring.in_c(conn) == {w.name: True for w in scoring.WIRED}
            # an application's db status still works: the overloads change no call
            assert scoring.status_lines(conn) == before
            assert " kernel)" in before[0]


def test_a_clean_install_has_no_problems_and_survives_a_round_trip(admin_url: str) -> None:
    """The superuser installs into a database the untrusted role owns; down to base and up
    again (the scoring extension's empty schema goes with it, so it is not found later)."""
    with owned_database(admin_url) as site:
        migrate.upgrade(site.engine)
        with site.engine.connect() as conn:
            assert trust.problems(conn) == []
        migrate.downgrade(site.engine, "base")
        with site.engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:s)"),
                {"s": list(trust.SCHEMAS)},
            ).all()
        assert left == []
        migrate.upgrade(site.engine)
        assert migrate.current(site.engine) == migrate.head()


def test_vector_in_a_schema_the_role_owns_is_refused_and_rolled_back(admin_url: str) -> None:
    """pgvector not yet installed and a schema named like the superuser ("$user", first on
    its search_path) that the role owns: the extension would land there. Refused, undone."""
    with owned_database(admin_url) as site:
        with site.engine.begin() as conn:
            conn.execute(sa.text("DROP EXTENSION vector"))
            me = conn.execute(sa.text("SELECT current_user::text")).scalar_one()
        plant(site, [], [me])
        with pytest.raises(TrustError) as exc:
            migrate.upgrade(site.engine)
        assert exc.value.objects == (
            f"schema {me} (owner {site.owner}) of the vector extension: not yours and not a "
            "superuser's",
        )
        assert migrate.current(site.engine) is None
        with site.engine.connect() as conn:
            assert (
                conn.execute(
                    sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")
                ).scalar_one()
                == 0
            )


def test_db_status_reads_no_code_another_role_wrote(admin_url: str, built: Path) -> None:
    """Reads that any role runs: the version only from a plain table without row security
    (a view named pgembed.alembic_version is refused unread), and the extension's kernel()
    only when the name is the extension's own function."""
    with owned_database(admin_url) as site:
        view = Obj("view", "pgembed", "view", (
            "CREATE FUNCTION public.planted_version() RETURNS text "
            f"{_body('view', False)}",
            "CREATE VIEW pgembed.alembic_version AS "
            "SELECT public.planted_version() AS version_num",
        ))  # fmt: skip
        plant(site, [view], ["pgembed"])
        with pytest.raises(TrustError, match="not the plain table"):
            migrate.current(site.engine)
        with pytest.raises(TrustError, match="pgembed did not create it"):
            migrate.upgrade(site.engine)
        assert fired(site) == []
    with owned_database(admin_url) as site:
        migrate.upgrade(site.engine)
        # the extension's schema renamed (as only its owner, a superuser, can), and the role
        # puts its own pgembed_scoring.kernel() in the name's place
        with site.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER SCHEMA {scoring.EXTENSION} RENAME TO moved_away"))
        kernel = Obj("function", scoring.EXTENSION, "kernel", (
            f"CREATE FUNCTION {scoring.EXTENSION}.kernel() RETURNS text "
            f"{_body('kernel', False)}",
        ))  # fmt: skip
        plant(site, [kernel], [scoring.EXTENSION])
        with site.engine.connect() as conn:
            line = scoring.status_lines(conn)[0]
        assert line.endswith(f"but {scoring.EXTENSION}.kernel() is not the extension's"), line
        assert fired(site) == []
        with pytest.raises(TrustError, match="pgembed did not create it"):
            scoring.wire(site.engine)
        assert fired(site) == []
