"""SQL 0.5.1: target_recall without a calibration runs the strategy's defaults.

Revision ID: 0010
Revises: 0009

Installs ``pgembed--0.5.0--0.5.1.sql`` (``search_knn`` and ``search_multivector``, and
``pgembed.version()``). The downgrade puts 0.5.0's definitions of the same functions back,
taken from ``pgembed--0.5.0.sql`` itself, so no copy of them is kept.
"""

from __future__ import annotations

import re
from importlib import resources

from alembic import op

from pgembed.db import raw_connection
from pgembed.migrate import VECTOR_SCHEMA, install_sql, vector_schema_identifier

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PATCH = "pgembed--0.5.0--0.5.1.sql"
_FULL = "pgembed--0.5.0.sql"


def _functions(script: str) -> list[str]:
    """The functions a patch script (re)defines, by name."""
    return sorted(set(re.findall(r"^CREATE OR REPLACE FUNCTION pgembed\.(\w+)\(", script, re.M)))


def _definitions(script: str, names: list[str]) -> str:
    """Each named function's definitions and comments in a full install script."""
    out = []
    for name in names:
        pattern = re.compile(
            rf"^CREATE OR REPLACE FUNCTION pgembed\.{name}\(.*?"
            rf"^COMMENT ON FUNCTION pgembed\.{name}\(.*?';$",
            re.M | re.S,
        )
        found = pattern.findall(script)
        if len(found) != 1:
            raise RuntimeError(f"{_FULL} defines pgembed.{name} {len(found)} times, not once")
        out.append(found[0])
    return "\n\n".join(out)


def _read(filename: str) -> str:
    return resources.files("pgembed").joinpath("sql", filename).read_text(encoding="utf-8")


def upgrade() -> None:
    install_sql(op.get_bind(), PATCH)


def downgrade() -> None:
    conn = op.get_bind()
    sql = _definitions(_read(_FULL), _functions(_read(PATCH)))
    raw_connection(conn).execute(sql.replace(VECTOR_SCHEMA, vector_schema_identifier(conn)))
