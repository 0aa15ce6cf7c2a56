"""A no-op revision on top of pgembed's head, for round trips over a later revision."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.engine import Engine

from pgembed import migrate

RunRevision = Callable[[Engine, str, str], None]


@pytest.fixture
def noop_revision(tmp_path: Path) -> RunRevision:
    """Writes revision "9999" after head; returns run(engine, "upgrade"|"downgrade", rev)."""
    (tmp_path / "9999_noop.py").write_text(
        f'revision = "9999"\ndown_revision = "{migrate.head()}"\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade() -> None:\n    pass\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )
    shipped = resources.files("pgembed").joinpath("migrations", "versions")

    def run(engine: Engine, fn: str, rev: str) -> None:
        with engine.begin() as conn:
            cfg = migrate._config(conn)
            cfg.set_main_option("path_separator", "os")
            cfg.set_main_option("version_locations", os.pathsep.join([str(shipped), str(tmp_path)]))
            getattr(command, fn)(cfg, rev)

    return run
