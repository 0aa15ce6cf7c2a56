"""Embedded shards: link roles let the coordinator's postgres_fdw log in (docs/scale-out.md).

The documented steps run as written (two embedded shard servers in fresh homes, a link role
and its database on each, the sharded collection, ``pgembed shards search``); the rule
survives a restart and changes nothing for other OS users; without a link role the CLI says
so in one line; bad role names are refused, generated from the code's rules and the
catalog's own roles.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pgembed import ShardedCollection, link_roles, migrate
from pgembed.db import translate_sql_errors
from pgembed.encoders.testing import TINY_NAME
from pgembed.errors import ConfigError, PgembedError, ServerError
from pgembed.server import SUPERUSER, EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "scale-out.md"
DOC_HOMES = "/var/lib/pgembed-shard"
DOC_MODEL = "all-minilm-l6-v2"
SMALL = "shared_buffers=64MB,max_connections=40"
ROLE = "pgembed_link"
TEXTS = {1: "rain on the plain", 2: "a cat sat on the mat", 3: "dogs bark at night"}

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("PGEMBED_DATABASE_URL")),
    reason="the coordinator must be the embedded server, whose postgres_fdw runs as its "
    "server user",
)
as_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only as root does the coordinator's server run as another OS user (nobody) "
    "than the shards' owner, so that peer authentication refuses postgres_fdw",
)


def _section_blocks() -> list[tuple[str, str]]:
    """(language, body) of each code block of the "Embedded shards" section, in order."""
    text = DOC.read_text()
    start = text.index("\n## Embedded shards\n")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, re.M | re.S)


Done = subprocess.CompletedProcess[str]


@dataclass
class Setup:
    root: Path
    env: dict[str, str]
    coordinator: str
    password: str

    def home(self, i: int) -> Path:
        return self.root / f"shard{i}"

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Done:
        return subprocess.run(
            [sys.executable, "-m", "pgembed.cli", *args], env=env or self.env,
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip


def _env(coordinator: str, model_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PGEMBED_DATABASE_URL=coordinator,
        PGEMBED_MODEL_DIR=str(model_dir),
        PGEMBED_PG_SETTINGS=SMALL,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        # `pgembed`, `python` and `openssl` of the documented steps
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


@pytest.fixture(scope="module")
def documented(
    make_database: Any, tiny_model_dir: Path
) -> Iterator[tuple[Setup, subprocess.CompletedProcess[str]]]:
    """The documented steps, run as written but for the homes' directory and the model."""
    root = Path(tempfile.mkdtemp(prefix="pgembed-embshards-", dir="/tmp"))
    os.chmod(root, 0o755)  # the server user enters each home below
    blocks = _section_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "python", "bash"], blocks
    script = []
    for lang, body in blocks:
        assert DOC_HOMES in body or lang == "bash", body
        body = body.replace(DOC_HOMES, f"{root}/shard").replace(DOC_MODEL, TINY_NAME)
        script.append(body if lang == "bash" else f"python - <<'PGEMBED_DOC'\n{body}PGEMBED_DOC\n")
    script.append('printf "%s" "$PGEMBED_LINK_PASSWORD" > "$ROOT/password"\n')
    coordinator = make_database()
    env = {**_env(coordinator, tiny_model_dir), "ROOT": str(root)}
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "".join(script)], env=env,
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        password = (root / "password").read_text()
        assert len(password) == 48, "openssl rand -hex 24"
        yield Setup(root, _env(coordinator, tiny_model_dir), coordinator, password), done
    finally:
        for i in (0, 1):
            EmbeddedServer(root / f"shard{i}").stop()
        shutil.rmtree(root, ignore_errors=True)


def _python_hits(setup: Setup, encoder: Any, query: str, k: int) -> list[tuple[int, float]]:
    engine = sa.create_engine(setup.coordinator)
    coll = ShardedCollection.open(engine, "docs", encoder)
    try:
        return list(coll.search(query, k=k))
    finally:
        coll.dispose()
        engine.dispose()


def _cli_hits(setup: Setup, query: str, k: int) -> list[dict[str, Any]]:
    done = setup.cli("shards", "search", "docs", query, "-k", str(k), "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_documented_steps_work(documented: Any, tiny_encoder: Any) -> None:
    setup, done = documented
    shown = [line.split() for line in done.stdout.splitlines() if re.match(r"\s*\d+\s", line)]
    assert [int(w[0]) for w in shown] == [1, 2], done.stdout  # the search's two ranks
    hits = _python_hits(setup, tiny_encoder, "wet weather", 2)
    assert [int(w[1]) for w in shown] == [i for i, _ in hits]
    # the same hits as Python, with every text read through the coordinator's parent table
    got = _cli_hits(setup, "wet weather", 3)
    assert [(g["id"], round(g["score"], 5)) for g in got] == [
        (i, round(s, 5)) for i, s in _python_hits(setup, tiny_encoder, "wet weather", 3)
    ]
    assert {g["id"]: g["text"] for g in got} == TEXTS
    # both shards hold rows, each in a database its link role owns, as a non-superuser
    for i in (0, 1):
        server = EmbeddedServer(setup.home(i))
        with sa.create_engine(server.url.replace("/postgres?", "/shard?")).connect() as conn:
            owner, su = conn.execute(
                sa.text(
                    "SELECT pg_get_userbyid(d.datdba), r.rolsuper FROM pg_database d, "
                    "pg_roles r WHERE d.datname = 'shard' AND r.rolname = :r"
                ),
                {"r": ROLE},
            ).one()
            assert (owner, su) == (ROLE, False)
            assert conn.execute(sa.text("SELECT count(*) FROM public.docs")).scalar() > 0


def _hba(server: EmbeddedServer) -> str:
    return (server.data / "pg_hba.conf").read_text()


def _rules(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_the_rule_survives_a_restart_and_widens_nothing(
    documented: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, _ = documented
    server = EmbeddedServer(setup.home(0))
    owner = pwd.getpwuid(os.geteuid()).pw_name
    expected = [f"local all {ROLE} scram-sha-256", "local all all peer map=pgembed"]
    ident = [f"pgembed {owner} {SUPERUSER}"]
    assert _rules(_hba(server)) == expected
    assert (setup.home(0) / link_roles.FILE).stat().st_uid == os.geteuid()
    server.stop()
    monkeypatch.setenv("PGEMBED_PG_SETTINGS", SMALL)
    server.start()
    assert _rules(_hba(server)) == expected
    assert _rules((server.data / "pg_ident.conf").read_text()) == ident
    assert [h["id"] for h in _cli_hits(setup, "wet weather", 3)] != []


@as_root
def test_other_os_users_gain_nothing(documented: Any) -> None:
    """As nobody (the server user, who can enter run/): postgres is refused as before, the
    link role only with its password."""
    setup, _ = documented
    server = EmbeddedServer(setup.home(1))
    psql = str(server.bin / "psql")

    def as_nobody(user: str, password: str | None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", **({"PGPASSWORD": password} if password else {})}
        nobody = pwd.getpwnam("nobody")
        cmd = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
               "--clear-groups", psql, "-h", str(server.run_dir), "-U", user, "-d", "shard",
               "-w", "-Atc", "SELECT 1"]  # fmt: skip
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)

    refused = as_nobody(SUPERUSER, None)
    assert refused.returncode != 0 and "Peer authentication failed" in refused.stderr
    refused = as_nobody(ROLE, None)
    assert refused.returncode != 0 and "password" in refused.stderr
    refused = as_nobody(ROLE, "wrong" + setup.password)
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    admitted = as_nobody(ROLE, setup.password)
    assert (admitted.returncode, admitted.stdout.strip()) == (0, "1"), admitted.stderr


@as_root
def test_without_a_link_role_the_error_names_the_shard(
    documented: Any, make_database: Any, tiny_encoder: Any
) -> None:
    """Shard URLs that log in as postgres by peer: Python gets in, the coordinator's
    postgres_fdw does not, and both the CLI and plain SQL say which shard and what to do."""
    setup, _ = documented
    urls = [EmbeddedServer(setup.home(i)).url.replace("/postgres?", "/shard?") for i in (0, 1)]
    other = sa.create_engine(make_database())
    migrate.upgrade(other)
    env = {**setup.env, "PGEMBED_DATABASE_URL": str(other.url.render_as_string(False))}
    coll = ShardedCollection(other, "peer_docs", tiny_encoder, shards=urls, kinds=("single",))
    try:
        coll.create()
        coll.add(list(TEXTS.values()), ids=list(TEXTS))
        assert len(coll.search("wet weather", k=3)) == 3  # Python's own connections get in
        done = setup.cli("shards", "search", "peer_docs", "wet weather", env=env)
        assert done.returncode == 1, (done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pgembed: error: "), done.stderr
        labels = [s.label for s in coll.shards]
        assert any(f"cannot log in to {label}:" in lines[0] for label in labels), lines[0]
        for needed in ("Peer authentication failed", "pgembed db link-role",
                       link_roles.DOCS):  # fmt: skip
            assert needed in lines[0], lines[0]
        assert "went away" not in lines[0] and setup.password not in done.stderr
        # plain SQL through the parent table, as pgembed's own calls map it
        with (
            pytest.raises(PgembedError, match=r"shard \d of 'peer_docs'.*link-role"),
            translate_sql_errors("peer_docs"),
            other.connect() as conn,
        ):
            conn.execute(sa.text("SELECT count(*) FROM public.peer_docs")).scalar()
    finally:
        coll.drop(force=True)
        coll.dispose()
        other.dispose()


# --- bad names: generated from the rules, and from the catalog's own roles -----------------

_ALLOWED = set(string.ascii_lowercase + string.digits + "_")
_BAD_SHAPES = [
    *(f"link{c}role" for c in string.printable if c not in _ALLOWED),
    *(f"link{c}" for c in "éßΩ\x00"),
    "", "1link", "Pgembed_link", "PGEMBED_LINK", "x" * 64,
]  # fmt: skip
_BAD_NAMES = sorted(link_roles.HBA_KEYWORDS | link_roles.RESERVED | {SUPERUSER, "pg_link"})


@pytest.mark.parametrize("role", _BAD_SHAPES + _BAD_NAMES)
def test_bad_role_names_are_refused(role: str, tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "home")
    with pytest.raises(ConfigError, match=r"link role name .* is refused"):
        server.allow_password_login(role, "secret")
    assert not server.home.exists()  # refused before the server or any file


def test_every_role_the_catalog_has_is_refused(documented: Any) -> None:
    """The roles a fresh server has (the superuser, PostgreSQL's pg_* roles): none can become
    a link role, through the API or the CLI, and the recorded roles stay as they were."""
    setup, _ = documented
    server = EmbeddedServer(setup.home(0))
    with sa.create_engine(server.url).connect() as conn:
        builtin = conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE oid < 16384")).scalars()
        names = sorted(builtin)
    assert SUPERUSER in names and len(names) > 5
    before = (setup.home(0) / link_roles.FILE).read_text()
    env = {**setup.env, "PGEMBED_HOME": str(setup.home(0)), "PGEMBED_LINK_PASSWORD": "x"}
    for name in names:
        with pytest.raises(ConfigError, match="is refused"):
            server.allow_password_login(name, "secret")
    for name in (SUPERUSER, names[-1]):  # the CLI says the same in one line
        done = setup.cli("db", "link-role", name, env=env)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("pgembed: error: link role name"), done.stderr
    assert (setup.home(0) / link_roles.FILE).read_text() == before
    assert _rules(_hba(server))[0] == f"local all {ROLE} scram-sha-256"


def test_the_cli_takes_no_password_from_its_arguments(documented: Any, tmp_path: Path) -> None:
    setup, _ = documented
    env = {**setup.env, "PGEMBED_HOME": str(setup.home(0))}
    env.pop("PGEMBED_LINK_PASSWORD", None)
    done = setup.cli("db", "link-role", "pgembed_other", env=env)
    assert done.returncode == 1 and "PGEMBED_LINK_PASSWORD" in done.stderr, done.stderr
    done = setup.cli("db", "link-role", "pgembed_other", "--password", "x", env=env)
    assert done.returncode == 2, done.stderr  # no such option
    # --password-file, then --remove: the rule comes and goes, the other role's stays
    (tmp_path / "pw").write_text("s3cret pass\n")
    done = setup.cli("db", "link-role", "pgembed_other", "--password-file",
                     str(tmp_path / "pw"), env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    server = EmbeddedServer(setup.home(0))
    assert "local all pgembed_other scram-sha-256" in _rules(_hba(server))
    url = sa.engine.URL.create(
        "postgresql+psycopg", username="pgembed_other", password="s3cret pass",
        database="postgres", query={"host": str(server.run_dir)},
    )  # fmt: skip
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar() == "pgembed_other"
    done = setup.cli("db", "link-role", "pgembed_other", "--remove", env=env)
    assert done.returncode == 0, done.stderr
    assert "pgembed_other" not in _hba(server)
    assert _rules(_hba(server))[0] == f"local all {ROLE} scram-sha-256"


def test_a_recorded_file_that_is_not_pgembeds_is_refused(tmp_path: Path) -> None:
    """A name pgembed would not write (edited in by hand) stops the start, naming the file."""
    home = tmp_path / "home"
    home.mkdir()
    (home / link_roles.FILE).write_text("pgembed_link\nall\n")
    with pytest.raises(ServerError, match="link-roles names 'all'"):
        link_roles.read(home, os.geteuid(), SUPERUSER)  # what every start reads


def test_a_refused_login_from_python_says_so(documented: Any, tiny_encoder: Any) -> None:
    """Python's own connection to a shard with a wrong password: ShardError naming the shard
    and the login, not 'went away', and never the password."""
    from psycopg.conninfo import make_conninfo

    from pgembed.errors import ShardError

    setup, _ = documented
    wrong = "wrong-" + setup.password
    urls = [
        make_conninfo(host=f"{setup.home(i)}/run", dbname="shard", user=ROLE,
                      password=wrong if i == 0 else setup.password)
        for i in (0, 1)
    ]  # fmt: skip
    engine = sa.create_engine(setup.coordinator)
    coll = ShardedCollection(engine, "docs", tiny_encoder, shards=urls, kinds=("single",))
    try:
        with pytest.raises(ShardError) as got:
            coll.search("wet weather", k=2)
    finally:
        coll.dispose()
        engine.dispose()
    text = str(got.value)
    assert f"{coll.shards[0].label}: cannot log in:" in text, text
    assert 'password authentication failed for user "pgembed_link"' in text, text
    assert "pgembed db link-role" in text and "went away" not in text, text
    assert wrong not in text and setup.password not in text
