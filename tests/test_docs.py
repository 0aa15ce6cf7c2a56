"""Every code block of README.md and docs/*.md runs, in order, against a fresh database.

- ``python`` blocks of one document share a namespace, so a later block uses what an earlier
  one made; a block that uses ``op`` gets alembic's ``Operations`` on a transaction of the
  document's ``engine``. Their ``assert`` lines are the documented outputs, checked.
- ``sql`` blocks run as one script on that database.
- ``bash`` blocks run each ``pgembed ...`` line through the CLI, which must succeed; any other
  command must be skipped.
- ``text`` blocks (and blocks without a language) are output, not code.
- A block preceded by ``<!-- doc-test: skip: REASON -->`` is not run; the reason is required,
  and names what runs it instead where something does.

The README's examples use the real all-MiniLM-L6-v2 (slow job).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)(?:<!-- doc-test: (?P<marker>[^\n]*?) -->\n[ \t]*)?"
    r"```(?P<lang>[\w-]*)\n(?P<body>.*?)^[ \t]*```[ \t]*$",
    re.M | re.S,
)
OUTPUT = ("", "text")
RUN = ("python", "sql", "bash")


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    body: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text()
    out = []
    for m in BLOCK.finditer(text):
        indent = len(m["indent"])
        body = "\n".join(line[indent:] for line in m["body"].splitlines()) + "\n"
        marker = m["marker"]
        skip = None
        if marker is not None:
            assert marker.startswith("skip: ") and len(marker) > 12, (doc, marker)
            skip = marker.removeprefix("skip: ")
        line = text.count("\n", 0, m.start("lang")) + 1
        out.append(Block(doc, line, m["lang"], body, skip))
    return out


def test_every_block_has_a_known_language() -> None:
    for doc in DOCS:
        for b in blocks(doc):
            assert b.lang in OUTPUT + RUN, f"{b.where}: language {b.lang!r}: mark it text or skip"


def _python(block: Block, ns: dict[str, Any]) -> None:
    code = compile(block.body, block.where, "exec")
    if "op." not in block.body:
        exec(code, ns)
        return
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    import pgembed.alembic_ops  # noqa: F401  (registers the operations)

    with ns["engine"].begin() as conn:
        exec(code, {**ns, "op": Operations(MigrationContext.configure(conn))})


def _sql(block: Block, url: str) -> None:
    from pgembed.db import raw_connection

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            raw_connection(conn).execute(block.body)  # a script: several statements
    finally:
        engine.dispose()


def _bash(block: Block, env: dict[str, str]) -> None:
    for line in block.body.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "pgembed", f"{block.where}: only pgembed commands run: {line!r}"
        done = subprocess.run([sys.executable, "-m", "pgembed.cli", *words[1:]], env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, f"{block.where}: {line}\n{done.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_doc_blocks_run(
    doc: Path, make_database: Any, minilm_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_database()
    monkeypatch.setenv("PGEMBED_DATABASE_URL", url)
    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(Path(minilm_encoder.path).parent))
    env = dict(os.environ)
    ns: dict[str, Any] = {"__name__": f"doc_{doc.stem}"}
    ran = 0
    for b in blocks(doc):
        if b.skip is not None or b.lang in OUTPUT:
            continue
        if b.lang == "python":
            _python(b, ns)
        elif b.lang == "sql":
            _sql(b, url)
        else:
            _bash(b, env)
        ran += 1
    if "engine" in ns:
        ns["engine"].dispose()
    every = [b for b in blocks(doc) if b.lang in RUN]
    assert ran == sum(1 for b in every if b.skip is None)
