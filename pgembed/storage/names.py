"""Names in SQL: identifiers quoted by PostgreSQL's rule, text search configurations
spelled so that ``::regconfig`` reads back exactly the one named, and DDL run as is.

A user's names (collection, table, schema, column, configuration) are raw: ``My Table`` is
that table, not ``my`` anything. They reach SQL only as bound values or as identifiers
quoted here, and DDL built from them is run without parameters, so neither SQLAlchemy's
``:name`` nor the driver's ``%`` placeholders touch them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pgembed.errors import CollectionError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

# PostgreSQL cuts identifiers at 63 bytes (NAMEDATALEN - 1), not characters.
MAX_IDENTIFIER_BYTES = 63

# What regconfig's input (SplitIdentifierString) reads back unchanged without quotes.
_BARE = re.compile(r"[a-z_][a-z0-9_]*")


def check_name(value: str, what: str) -> str:
    """Names are passed as identifiers (quoted), never as SQL; only reject the unusable.

    The limit is PostgreSQL's, in UTF-8 bytes: a longer name would be cut silently.
    """
    if not isinstance(value, str) or not value or "\x00" in value:
        raise CollectionError(
            f"invalid {what} {value!r}: use 1 to {MAX_IDENTIFIER_BYTES} bytes without NUL bytes"
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise CollectionError(
            f"invalid {what} {value!r}: it is not valid Unicode (a lone surrogate); "
            "use a name of ordinary characters"
        ) from None
    if size > MAX_IDENTIFIER_BYTES:
        raise CollectionError(
            f"invalid {what} {value!r}: it is {size} bytes in UTF-8, and PostgreSQL "
            f"identifiers hold at most {MAX_IDENTIFIER_BYTES} bytes; use a shorter name"
        )
    return value


def quote_ident(name: str) -> str:
    """``name`` as a quoted identifier: always quoted, inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def qualified(*names: str) -> str:
    """``"schema"."table"``: for DDL run by :func:`run_ddl` and for ``to_regclass`` values."""
    return ".".join(quote_ident(n) for n in names)


def ts_config_parts(config: str) -> tuple[str, str]:
    """(schema, name) of a ``lexical_config``: ``name`` is in pg_catalog, ``schema.name``
    names its schema. Raw names, compared case-sensitively, as every pgembed name is."""
    schema, _, name = config.rpartition(".")
    return schema or "pg_catalog", name


def ts_config_sql(config: str) -> str:
    """How the catalog and the generated column spell ``config`` for ``::regconfig``: each
    part bare when regconfig reads it back unchanged (``english``, ``myschema.myconfig``,
    as before), else quoted (``cfgs."MyCfg"``), so it names the configuration given."""
    return ".".join(p if _BARE.fullmatch(p) else quote_ident(p) for p in config.split("."))


def ts_config_from_sql(spelled: str) -> str:
    """The ``lexical_config`` of a catalog spelling: regconfig's reading of it (unquoted
    parts folded to lower case, as PostgreSQL folds them), joined by a dot."""
    parts: list[str] = []
    i, n = 0, len(spelled)
    while i < n:
        if spelled[i] == '"':
            j, buf = i + 1, []
            while j < n:
                if spelled[j] == '"':
                    if j + 1 < n and spelled[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(spelled[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = spelled.find(".", i)
            j = n if j < 0 else j
            word = spelled[i:j].strip()
            parts.append("".join(c.lower() if "A" <= c <= "Z" else c for c in word))
            i = j
        if i < n and spelled[i] == ".":
            i += 1
    return ".".join(parts)


def run_ddl(conn: Connection, statement: str) -> None:
    """Run a statement that takes no parameters as written: no ``:name`` binds, no ``%``
    placeholders (``no_parameters``: the driver gets the text alone)."""
    conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
