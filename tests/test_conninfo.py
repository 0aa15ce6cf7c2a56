"""Connection strings: every form, every libpq parameter, generated.

A Hypothesis strategy draws a set of libpq parameters (names from libpq's own list, values
with the characters URLs and conninfo strings must escape) and writes it in each form
pgembed accepts, by writers of this file's own (not pgembed's): a URI with userinfo, a URI
with everything in its query string, a ``postgres://`` URI, ``key=value`` conninfo, and a
SQLAlchemy URL rendered by SQLAlchemy. Secrets (password, sslpassword...) always hold the
marker ``ZQ``, which no other value holds, so "the secret never shows" is "ZQ never shows",
whatever the encoding (raw, percent-encoded, quoted).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pgembed import config, conninfo, db
from pgembed.errors import ConfigError, DatabaseUnavailableError

MARK = "ZQ"
SPECIAL = " /:@?#&=%+'\\\",;é~*"
VALUE = st.text(alphabet="abcxyz019-_." + SPECIAL, min_size=1, max_size=12).filter(
    lambda v: v.strip() == v  # key=value conninfo trims unquoted blanks; libpq keeps quoted
)
SECRET = st.text(alphabet="abZQ09" + SPECIAL, max_size=10).map(lambda v: MARK + v)
HOSTS = st.sampled_from(
    ["localhost", "db.example.com", "127.0.0.1", "::1", "/tmp/pg sock", "/var/run/pg%x",
     "a.example,b.example", "/tmp/a,/tmp/b"]
)  # fmt: skip
OTHER = sorted(
    k
    for k, flags in conninfo.keywords().items()
    if "D" not in flags and k not in {"user", "password", "dbname", "host", "port", "hostaddr"}
)
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def libpq_params(draw: Any) -> dict[str, str]:
    d: dict[str, str] = {}
    if draw(st.booleans()):
        d["user"] = draw(VALUE)
    if draw(st.booleans()):
        d["password"] = draw(SECRET)
    if draw(st.booleans()):
        d["dbname"] = draw(VALUE)
    if draw(st.booleans()):
        d["host"] = draw(HOSTS)
    if draw(st.booleans()):
        n = len(d.get("host", "x").split(","))
        d["port"] = ",".join(str(draw(st.integers(1, 65535))) for _ in range(n))
    for k in draw(st.lists(st.sampled_from(OTHER), max_size=6, unique=True)):
        d[k] = draw(SECRET if "*" in conninfo.keywords()[k] else VALUE)
    return d


# --- writers of the forms, independent of pgembed's ------------------------------------------


def _pq(v: str) -> str:
    return quote(v, safe="")


def uri_userinfo(d: dict[str, str], scheme: str = "postgresql") -> str:
    rest = dict(d)
    user, pw = rest.pop("user", None), rest.pop("password", None)
    auth = ""
    if user is not None or pw is not None:
        auth = _pq(user or "") + (":" + _pq(pw) if pw is not None else "") + "@"
    host = rest.pop("host", None)
    netloc = ""
    if host is not None:  # libpq takes a percent-encoded socket path, and [v6] hosts
        hosts = host.split(",")
        ports = rest.pop("port", "").split(",") if "port" in rest else [""] * len(hosts)
        netloc = ",".join(
            (f"[{h}]" if ":" in h else _pq(h)) + (f":{p}" if p else "")
            for h, p in zip(hosts, ports, strict=True)
        )
    path = "/" + _pq(rest.pop("dbname")) if "dbname" in rest else ""
    query = "&".join(f"{k}={_pq(v)}" for k, v in rest.items())
    return f"{scheme}://{auth}{netloc}{path}" + (f"?{query}" if query else "")


def uri_query(d: dict[str, str]) -> str:
    return "postgresql:///?" + "&".join(f"{k}={_pq(v)}" for k, v in d.items())


def key_value(d: dict[str, str]) -> str:
    def q(v: str) -> str:
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={q(v)}" for k, v in d.items())


def sqlalchemy_url(d: dict[str, str]) -> str:
    rest = dict(d)
    host = rest.get("host")
    netloc_host = host is not None and "," not in host and not host.startswith("/")
    port = (
        rest.get("port")
        if netloc_host and rest.get("port", "").isdigit() and int(rest["port"]) > 0
        else None
    )
    # SQLAlchemy writes a password only after a user name; else it goes in the query
    skip = {"user", "dbname"} | ({"password"} if "user" in rest else set())
    skip |= {"host"} if netloc_host else set()
    skip |= {"port"} if port else set()
    url = sa.engine.URL.create(
        "postgresql+psycopg",
        username=rest.get("user"),
        password=rest.get("password") if "user" in rest else None,
        host=host if netloc_host else None,
        port=int(port) if port else None,
        database=rest.get("dbname"),
        query={k: v for k, v in rest.items() if k not in skip},
    )
    return url.render_as_string(hide_password=False)


FORMS: dict[str, Callable[[dict[str, str]], str]] = {
    "uri userinfo": uri_userinfo,
    "uri query": uri_query,
    "postgres://": lambda d: uri_userinfo(d, "postgres"),
    "key=value": key_value,
    "sqlalchemy": sqlalchemy_url,
}


def _masked(d: dict[str, str]) -> dict[str, str]:
    secret = conninfo.secret_keys()
    return {k: conninfo.MASK if k in secret else v for k, v in d.items()}


@EXAMPLES
@given(libpq_params(), st.sampled_from(sorted(FORMS)))
def test_every_form_parses_to_the_same_parameters(d: dict[str, str], form: str) -> None:
    url = FORMS[form](d)
    assert conninfo.params(url) == d


@EXAMPLES
@given(libpq_params(), st.sampled_from(sorted(FORMS)))
def test_masking_hides_every_secret_and_keeps_the_rest(d: dict[str, str], form: str) -> None:
    url = FORMS[form](d)
    for shown in (conninfo.mask(url), db._safe(url)):
        assert MARK not in shown, shown
        assert conninfo.params(shown) == _masked(d)
    stored = conninfo.params(_shards().without_password(url))
    assert stored == conninfo.without_secrets(d) and MARK not in _shards().without_password(url)


def _corrupt(url: str, form: str, how: str) -> str:
    if form == "key=value":
        return url + (" foo=1" if how == "unknown parameter" else " '")
    sep = "&" if "?" in url else "?"
    if how == "unknown parameter":
        return url + sep + "foo=1"
    if form == "sqlalchemy":  # SQLAlchemy leaves bad escapes as they are
        return url + sep + "sslmode=a&sslmode=b"
    return url + "%G"  # a bad percent escape in the last part


@EXAMPLES
@given(libpq_params(), st.sampled_from(sorted(FORMS)),
       st.sampled_from(["unknown parameter", "bad escape"]))  # fmt: skip
def test_malformed_strings_are_masked_too(d: dict[str, str], form: str, how: str) -> None:
    url = _corrupt(FORMS[form](d), form, how)
    with pytest.raises(ConfigError) as err:
        conninfo.params(url)
    assert MARK not in str(err.value) and MARK not in conninfo.mask(url)
    assert isinstance(err.value, DatabaseUnavailableError)  # db.create_engine's contract


@EXAMPLES
@given(libpq_params())
def test_sqlalchemy_and_libpq_round_trips(d: dict[str, str]) -> None:
    for url in (conninfo.to_sqlalchemy(d), conninfo.to_libpq(d)):
        assert conninfo.params(url) == d
    # SQLAlchemy's psycopg dialect hands the driver exactly these parameters
    args, kwargs = sa.create_engine(conninfo.to_sqlalchemy(d)).dialect.create_connect_args(
        sa.engine.make_url(conninfo.to_sqlalchemy(d))
    )
    kwargs.pop("context", None)  # psycopg's adapters, not a libpq parameter
    if not str(kwargs.get("port", "x")).strip(","):
        del kwargs["port"]  # ports of several hosts, none given: as libpq's ","
    assert {k: str(v) for k, v in kwargs.items()} == d and args in ([], [""])


@EXAMPLES
@given(libpq_params())
def test_foreign_server_options_carry_every_parameter(d: dict[str, str]) -> None:
    flags = conninfo.keywords()
    refused = {k for k in d if "D" in flags[k] or k.startswith("oauth_")}
    if refused:
        with pytest.raises(ConfigError, match="postgres_fdw cannot pass on") as err:
            conninfo.fdw_options(d)
        assert MARK not in str(err.value)
        return
    server, mapping = conninfo.fdw_options(d)
    carried = {**server, **mapping}
    assert {k: carried[k] for k in d if k not in conninfo.FDW_IGNORED} == {
        k: v for k, v in d.items() if k not in conninfo.FDW_IGNORED
    }
    assert not set(server) & (conninfo.secret_keys() | {"user"})
    assert set(mapping) <= conninfo.secret_keys() | {"user"}
    assert not set(carried) & conninfo.FDW_IGNORED


@EXAMPLES
@given(libpq_params(), st.sampled_from(sorted(FORMS)),
       st.sampled_from(["abc", "5432x", "-1", "0", "65536", "1.5"]))  # fmt: skip
def test_a_port_that_is_not_a_number_is_a_config_error(
    d: dict[str, str], form: str, port: str
) -> None:
    url = FORMS[form]({**d, "host": "localhost", "port": port})
    with pytest.raises(ConfigError, match=r"malformed database URL .*port") as err:
        db.normalize_url(url)
    assert MARK not in str(err.value)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_bad_database_url_setting(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = FORMS[form]({"user": "u", "password": "ZQ s3cret", "host": "localhost", "port": "x1"})
    monkeypatch.setenv("PGEMBED_DATABASE_URL", url)
    with pytest.raises(ConfigError, match="PGEMBED_DATABASE_URL") as err:
        config.database_url()
    assert MARK not in str(err.value)
    out = subprocess.run([sys.executable, "-m", "pgembed.cli", "db", "url"],
                         env={**os.environ, "PGEMBED_DATABASE_URL": url},
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines() == [out.stderr.strip()]
    assert (
        out.stderr.startswith("pgembed: error: malformed database URL") and MARK not in out.stderr
    )


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(SECRET, st.sampled_from(sorted(FORMS)))
def test_unreachable_server_errors_never_show_the_password(pw: str, form: str) -> None:
    url = FORMS[form]({"user": "u", "password": pw, "host": "127.0.0.1", "port": "1",
                       "dbname": "x", "connect_timeout": "3"})  # fmt: skip
    with pytest.raises(DatabaseUnavailableError, match="cannot reach PostgreSQL") as err:
        db.create_engine(url)
    assert MARK not in str(err.value)


def test_scrub_removes_every_form_of_a_secret() -> None:
    pw = "ZQ a/b@c%d'e"
    url = key_value({"user": "u", "password": pw, "host": "h"})
    text = " ".join(f"[{f}]" for f in (pw, quote(pw), quote(pw, safe=""), quote_plus(pw)))
    assert MARK not in conninfo.scrub(text, url)


def test_older_stored_urls_still_parse() -> None:
    # An older pgembed stored "postgresql:///db?host=...&password=..." without its "//".
    assert conninfo.params("postgresql:/db?host=/tmp/x&user=u") == {
        "dbname": "db", "host": "/tmp/x", "user": "u"}  # fmt: skip


@pytest.mark.parametrize("url", ["mysql://u:ZQpw@h/d", "postgresql+psycopg2://u:ZQpw@h/d"])
def test_other_drivers_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="not a PostgreSQL URL that pgembed can use") as err:
        db.normalize_url(url)
    assert MARK not in str(err.value)


def test_db_url_prints_both_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "host=/tmp/pg port=5433 dbname=d user=u options='-c search_path=a,b'"
    env = {**os.environ, "PGEMBED_DATABASE_URL": url}
    outs = [subprocess.run([sys.executable, "-m", "pgembed.cli", "db", "url", *flag], env=env,
                           capture_output=True, text=True, timeout=60, check=True).stdout.strip()
            for flag in ([], ["--libpq"])]  # fmt: skip
    assert outs[0].startswith("postgresql+psycopg://") and outs[1].startswith("postgresql://")
    assert [conninfo.params(o) for o in outs] == [conninfo.params(url)] * 2


def test_postgres_fdw_agrees_with_the_split(make_database: Any) -> None:
    """Every libpq parameter, as postgres_fdw on the server classifies it: the server
    options pgembed writes are accepted by CREATE SERVER, the user mapping options by
    CREATE USER MAPPING, and the ones it refuses or leaves out are refused by both."""
    engine = sa.create_engine(make_database())
    try:
        with engine.connect() as conn:
            raw = db.raw_connection(conn)
            raw.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")

            def accepted(ddl: sql.Composable) -> bool:
                try:
                    with raw.transaction():
                        raw.execute("CREATE SERVER probe FOREIGN DATA WRAPPER postgres_fdw")
                        raw.execute(ddl)
                        raise _Rollback
                except _Rollback:
                    return True
                except Exception:
                    return False

            ok: dict[str, set[str]] = {"server": set(), "mapping": set()}
            for k, flags in conninfo.keywords().items():
                opts = sql.SQL("OPTIONS ({} '1')").format(sql.Identifier(k))
                on_server = accepted(sql.SQL("ALTER SERVER probe {}").format(opts))
                on_mapping = accepted(
                    sql.SQL("CREATE USER MAPPING FOR CURRENT_USER SERVER probe {}").format(opts)
                )
                try:
                    server, mapping = conninfo.fdw_options({k: "1", "user": "u"})
                except ConfigError:
                    assert not (on_server or on_mapping), f"{k} ({flags}) is refused needlessly"
                    continue
                assert k not in server or on_server, f"CREATE SERVER refuses {k}"
                assert k not in mapping or on_mapping, f"CREATE USER MAPPING refuses {k}"
                ok["server"] |= {k} if k in server else set()
                ok["mapping"] |= {k} if k in mapping else set()
                carried = k in server or k in mapping
                assert carried or k in conninfo.FDW_IGNORED, k
                assert carried or not (on_server or on_mapping), f"{k} could be carried"
            conn.rollback()
        assert {"sslmode", "options", "application_name", "connect_timeout"} <= ok["server"]
        assert {"user", "password", "sslpassword"} <= ok["mapping"]
    finally:
        engine.dispose()


class _Rollback(Exception):
    pass


def _shards() -> Any:
    from pgembed import shards

    return shards
