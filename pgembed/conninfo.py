"""Connection strings: parsed by libpq's own parser, rendered and masked from that one dict.

Accepted forms: a libpq URI (``postgresql://`` or ``postgres://``), a libpq ``key=value``
conninfo, and a SQLAlchemy URL for psycopg 3 (``postgresql+psycopg://``, read the way
SQLAlchemy's psycopg dialect hands it to the driver). Every form becomes the dict of libpq
parameters that the connection uses; SQLAlchemy URLs, libpq URIs, masked strings and
postgres_fdw options are all written from that dict, so a parameter given anywhere (the
userinfo, ``?password=``, ``?user=``, ``key=value``) is treated the same everywhere.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import quote

from pgembed.errors import ConfigError, DatabaseUnavailableError

MASK = "***"
SA_SCHEME = "postgresql+psycopg"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(//)?")
_EXPECTED = (
    "expected postgresql://user:password@host:port/dbname (or ?host=/socket/dir for a unix "
    "socket), a libpq key=value string, or postgresql+psycopg://..."
)
# What postgres_fdw sets itself on its connections (its documentation): not carried.
FDW_IGNORED = frozenset({"client_encoding", "fallback_application_name"})


class MalformedURLError(ConfigError, DatabaseUnavailableError):
    """A connection string that is not a PostgreSQL URL libpq can use: a bad setting, and a
    database that cannot be reached with it."""


@functools.cache
def keywords() -> dict[str, str]:
    """Every libpq connection parameter and its display flags ('*' secret, 'D' debug)."""
    from psycopg import pq

    return {o.keyword.decode(): (o.dispchar or b"").decode() for o in pq.Conninfo.get_defaults()}


def secret_keys() -> frozenset[str]:
    """The parameters libpq itself treats as secrets: password, sslpassword..."""
    return frozenset(k for k, flags in keywords().items() if "*" in flags)


def _fix_legacy(text: str) -> str:
    # Older pgembed stored "postgresql:/db?host=..." (an empty host lost by urlunsplit).
    m = re.match(r"^(postgres(?:ql)?(?:\+psycopg)?):/(?!/)", text)
    return f"{m.group(1)}:///{text[m.end() :]}" if m else text


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _parse(url: str) -> dict[str, str]:
    """libpq parameters of ``url``; ValueError(reason) when it is not one libpq can use."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    text = _fix_legacy(url.strip())
    m = _SCHEME.match(text)
    if m and m.group(2):
        scheme = m.group(1).lower()
        if scheme == SA_SCHEME:
            return _parse_sqlalchemy(text)
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(
                f"{scheme}:// is not a PostgreSQL URL that pgembed can use (it connects through "
                "psycopg 3)"
            )
    try:
        raw = conninfo_to_dict(text)
    except psycopg.Error as e:
        raise ValueError(_first_line(e)) from None
    return {k: str(v) for k, v in raw.items() if v is not None and str(v) != ""}


def _parse_sqlalchemy(text: str) -> dict[str, str]:
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
    from sqlalchemy.engine import make_url

    try:
        dialect: Any = PGDialect_psycopg
        _, kwargs = dialect().create_connect_args(make_url(text))
    except Exception as e:  # SQLAlchemy's own parse errors (ValueError, ArgumentError)
        raise ValueError(_first_line(e)) from None
    known = keywords()
    out: dict[str, str] = {}
    for k, v in kwargs.items():
        if isinstance(v, tuple | list):
            raise ValueError(f"parameter {k!r} is given more than once")
        if k not in known:
            raise ValueError(f'invalid URI query parameter: "{k}"')
        if v is not None and str(v) != "":
            out[k] = str(v)
    return out


def _check(d: dict[str, str]) -> None:
    if not d.get("port", "").strip(","):
        d.pop("port", None)  # libpq's "," for several hosts without ports: none given
    for port in d.get("port", "").split(","):
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} is not a number in 1..65535")


def params(url: str, what: str = "database URL") -> dict[str, str]:
    """The libpq parameters of ``url`` (any accepted form; empty values dropped, as libpq
    treats them as unset). MalformedURLError, naming ``what``, when malformed."""
    try:
        d = _parse(url)
        _check(d)
    except ValueError as e:
        raise MalformedURLError(
            f"malformed {what} {mask(url)}: {scrub(str(e), url)}; {_EXPECTED}"
        ) from None
    return d


def is_uri(url: str) -> bool:
    m = _SCHEME.match(url.strip())
    return bool(m and m.group(2))


# --- writing --------------------------------------------------------------------------------

_ORDER = ("host", "hostaddr", "port")
_PLAIN_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]*")


def _q(value: str, safe: str = "") -> str:
    # '*' stays readable so that a masked password shows as ***
    return quote(value, safe="*" + safe)


def _render(scheme: str, d: dict[str, str]) -> str:
    """A URI both libpq and SQLAlchemy's psycopg dialect read back as ``d``."""
    rest = dict(d)
    user, password = rest.pop("user", None), rest.pop("password", None)
    userinfo = ""
    if user is not None or password is not None:
        userinfo = _q(user or "") + (f":{_q(password)}" if password is not None else "") + "@"
    netloc = ""
    host, port = rest.get("host"), rest.get("port")
    if host is not None and "," not in host and "/" not in host:
        if _PLAIN_HOST.fullmatch(host):
            netloc = host
        elif ":" in host and re.fullmatch(r"[0-9A-Fa-f:.%]+", host):
            netloc = f"[{host}]"  # IPv6; SQLAlchemy reads a query host's colon as a port
        if netloc:
            del rest["host"]
            if port is not None and port.isdigit() and port == str(int(port)):
                netloc += f":{port}"
                del rest["port"]
    path = "/" + _q(rest.pop("dbname")) if "dbname" in rest else "/"
    order = {k: i for i, k in enumerate((*_ORDER, *keywords()))}
    keys = sorted(rest, key=lambda k: (order.get(k, len(order)), k))
    query = "&".join(f"{k}={_q(rest[k], '/,')}" for k in keys)
    return f"{scheme}://{userinfo}{netloc}{path}" + (f"?{query}" if query else "")


def to_sqlalchemy(d: dict[str, str]) -> str:
    """A SQLAlchemy URL (psycopg 3 driver) that connects with exactly ``d``."""
    return _render(SA_SCHEME, d)


def to_libpq(d: dict[str, str]) -> str:
    """A libpq URI (what psql and other libpq programs take) for ``d``."""
    return _render("postgresql", d)


def without_secrets(d: dict[str, str]) -> dict[str, str]:
    secret = secret_keys()
    return {k: v for k, v in d.items() if k not in secret}


def normalize(url: str, what: str = "database URL") -> str:
    """``url`` as a SQLAlchemy URL for psycopg 3; MalformedURLError when malformed."""
    return to_sqlalchemy(params(url, what))


# --- masking --------------------------------------------------------------------------------


def mask(url: str) -> str:
    """``url`` as errors and logs show it: every secret (password, sslpassword...) replaced
    by ***, wherever it was given; in the form it was written in."""
    try:
        d = _parse(url)
    except ValueError:
        return _mask_unparsed(url)
    secret = secret_keys()
    shown = {k: MASK if k in secret else v for k, v in d.items()}
    if not is_uri(_fix_legacy(url.strip())):
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **shown)
    scheme = _SCHEME.match(url.strip())
    return _render(scheme.group(1).lower() if scheme else "postgresql", shown)


_SECRET_WORD = r"(?:ssl)?password|oauth_client_secret|\w*secret\w*|\w*pass\w*"


def _raw_secrets(text: str) -> list[str]:
    """What might be a secret in a string libpq cannot parse: a userinfo password, any
    password-like ``key=value`` (quoted or not) or query parameter."""
    found: list[str] = []
    m = re.match(r"^[^:/?#]*://([^/?#]*)@", text)
    if m is None:
        m = re.match(r"^[^:/?#]*://(.*)@", text)  # an unescaped '/' in the password
    if m and ":" in m.group(1):
        found.append(m.group(1).split(":", 1)[1])
    pattern = rf"(?i)(?:^|[\s&?;])(?:{_SECRET_WORD})\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s&#]*)"
    for value in re.findall(pattern, text):
        found.append(value)
        if value.startswith("'"):
            found.append(value.strip("'"))
    return [s for s in found if s]


def _mask_unparsed(text: str) -> str:
    return _replace(text, _raw_secrets(text))


def _forms(secret: str) -> set[str]:
    from urllib.parse import quote_plus

    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), _q(secret),
            _q(secret, "/,")}  # fmt: skip


def _replace(text: str, secrets: list[str]) -> str:
    forms = sorted({f for s in secrets for f in _forms(s) if f}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, MASK)
    return text


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's error message, say) without any form of ``url``'s secrets."""
    try:
        secrets = [v for k, v in _parse(url).items() if k in secret_keys()]
    except ValueError:
        secrets = _raw_secrets(url)
    return _replace(text, [s for s in secrets if s != MASK])


# --- postgres_fdw ---------------------------------------------------------------------------


def fdw_options(
    d: dict[str, str], label: str = "shard URL"
) -> tuple[dict[str, str], dict[str, str]]:
    """(CREATE SERVER options, CREATE USER MAPPING options) of a postgres_fdw server that
    connects as ``d`` does: the user and the secrets go to the user mapping, every other
    libpq parameter to the server; client_encoding and fallback_application_name are left
    out (postgres_fdw sets them). ConfigError for a parameter postgres_fdw refuses (libpq's
    debug options such as replication, and the oauth_* options)."""
    from psycopg import pq

    known = keywords()
    server: dict[str, str] = {}
    mapping: dict[str, str] = {}
    for k, v in d.items():
        flags = known.get(k)
        if k in FDW_IGNORED:
            continue
        if flags is None or "D" in flags or k.startswith("oauth_"):
            raise ConfigError(
                f"{label} {mask(to_libpq(d))} sets {k}, which postgres_fdw cannot pass on to "
                "the shard; remove it from the URL"
            )
        (mapping if k == "user" or "*" in flags else server)[k] = v
    if "user" not in mapping:  # as the shard's own connections from this process
        default = next((o.val for o in pq.Conninfo.get_defaults() if o.keyword == b"user"), None)
        if default:
            mapping["user"] = default.decode()
    if "dbname" not in server and "user" in mapping:
        server["dbname"] = mapping["user"]  # libpq's default database: the user's name
    return server, mapping


def same_database(a: dict[str, str], b: dict[str, str]) -> bool:
    """Whether two parameter sets name one database (host, address, port, name)."""
    keys = ("host", "hostaddr", "port", "dbname")
    return all(a.get(k) == b.get(k) for k in keys)
