"""File steps that never follow a link another OS user planted.

As root, pgembed works in directories that someone else owns or could have changed: the
embedded server's ``data/`` belongs to the server user (``nobody``), who can put a symbolic
or hard link at any name there, pointing at ``/etc/passwd``. So every path pgembed writes,
changes or reads in its home goes through here: the last component is opened with
``O_NOFOLLOW`` (a link there is refused or replaced, never followed), a file is written
under a fresh temporary name (``O_EXCL``) whose owner and mode are set on the open
descriptor (``fchown``, ``fchmod``) and then renamed over the old name (a rename replaces a
link, it does not write through it), and a file read or appended to must be a plain file
(regular, one link) of the expected owner. The directories above are pgembed's own: as
root, :func:`untrusted` refuses a home that another user could redirect or write.

Each path also raises the audit event :data:`AUDIT_EVENT` (``sys.addaudithook``), from
which the tests list every path pgembed touches.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from pgembed.errors import ServerError

AUDIT_EVENT = "pgembed.path"
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a planted FIFO
_TRIES = 10

Owner = tuple[int, int]  # uid, gid


def _touch(path: Path, how: str) -> None:
    """The audit event: the path and what is done to it (the tests read "replace": a file
    renamed into place)."""
    sys.audit(AUDIT_EVENT, str(path), how)


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _refused(path: Path, what: str) -> ServerError:
    return ServerError(
        f"{path} {what}; pgembed does not follow or reuse it. Remove it (pgembed writes its "
        "own files there again), or set PGEMBED_HOME to another directory"
    )


def _why(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and os.path.islink(path):
        return "is a symbolic link"
    return f"cannot be used ({exc.strerror})"


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[int]:
    """A descriptor of the directory ``path``; a link there is refused."""
    _touch(path, "open")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        raise _refused(path, _why(path, exc)) from None
    try:
        yield fd
    finally:
        os.close(fd)


def make_dir(path: Path, mode: int, owner: Owner | None = None) -> None:
    """Create ``path`` if missing; give it ``mode`` and ``owner`` (a link is refused)."""
    _touch(path, "mkdir")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    with open_dir(path) as fd:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)


def _check_plain(path: Path, st: os.stat_result, uid: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _refused(path, "is not a regular file")
    if st.st_nlink != 1:
        raise _refused(path, f"has {st.st_nlink} hard links")
    if st.st_uid != uid:
        raise _refused(path, f"belongs to '{_user(st.st_uid)}', not '{_user(uid)}'")


def open_plain(path: Path, flags: int, mode: int, uid: int, owner: Owner | None = None) -> int:
    """``os.open`` of a plain file of ``uid`` (a new one is given ``owner``, then checked)."""
    _touch(path, "open")
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        raise _refused(path, _why(path, exc)) from None
    try:
        st = os.fstat(fd)
        if owner is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            os.fchown(fd, *owner)  # ours to give: a file of this directory, one link
            st = os.fstat(fd)
        _check_plain(path, st, uid)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_plain(path: Path, uid: int) -> str | None:
    """The text of ``path`` if it is a plain file of ``uid``; None if it is missing or
    anything else (a link is never followed, so nothing else is read)."""
    _touch(path, "read")
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            _check_plain(path, os.fstat(fd), uid)
        except ServerError:
            return None
        return fh.read().decode("utf-8", errors="replace")


def read_owned(path: Path, uid: int) -> str | None:
    """The text of pgembed's own file ``path``: None when it is missing, refused when it is
    anything but a plain file of ``uid`` (a link is never followed, nor left in use)."""
    _touch(path, "read")
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _refused(path, _why(path, exc)) from None
    with os.fdopen(fd, "rb") as fh:
        _check_plain(path, os.fstat(fd), uid)
        return fh.read().decode("utf-8", errors="replace")


def append_line(path: Path, line: str, uid: int) -> bool:
    """Append ``line`` to the plain file ``path`` of ``uid`` unless it holds it already;
    True when it was appended. The file keeps its owner and mode."""
    fd = open_plain(path, os.O_RDWR | os.O_APPEND, 0, uid)
    with os.fdopen(fd, "r+b") as fh:
        if line.encode() in fh.read():
            return False
        fh.write(("\n" + line).encode())
    return True


def replace_file(path: Path, text: str, mode: int, owner: Owner | None = None) -> None:
    """Write ``text`` to ``path`` through ``<name>.pgembed-tmp``, created fresh, given
    ``mode`` and ``owner`` on its descriptor, then renamed over ``path``."""
    tmp_name = f"{path.name}.pgembed-tmp"
    _touch(path.parent / tmp_name, "write")
    _touch(path, "replace")
    with open_dir(path.parent) as dfd:
        for _ in range(_TRIES):
            try:
                fd = os.open(
                    tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=dfd
                )
                break
            except FileExistsError:
                try:
                    os.unlink(tmp_name, dir_fd=dfd)  # a link is removed, not followed
                except IsADirectoryError:
                    raise _refused(path.parent / tmp_name, "is a directory") from None
                except FileNotFoundError:
                    pass
        else:
            raise _refused(path.parent / tmp_name, "keeps coming back")
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode())
            fh.flush()
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fsync(fd)
        try:
            os.replace(tmp_name, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            raise _refused(path, f"cannot be replaced ({exc.strerror})") from None


def remove(path: Path) -> None:
    """Remove ``path``: a link or file is unlinked, a directory removed with its contents."""
    _touch(path, "remove")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # does not follow links inside
    else:
        os.unlink(path)


def check_tree(top: Path, uid: int, *, recursive: bool = True) -> None:
    """``top`` (a directory, not a link) and, when ``recursive``, everything under it
    belongs to ``uid`` and is writable by no one else: root runs programs from there."""
    _touch(top, "check")

    def refused(path: Path, what: str) -> ServerError:
        return ServerError(
            f"{path} {what}, and root runs what {top} holds; remove {top} (pgembed makes it "
            "again), or set PGEMBED_HOME to a directory that only root can change"
        )

    st = os.lstat(top)
    if not stat.S_ISDIR(st.st_mode):
        raise refused(top, "is not a directory (a link is not followed)")
    walk = os.walk(top) if recursive else [(str(top), [], [])]
    for dirpath, dirnames, filenames in walk:
        for name in (".", *dirnames, *filenames):
            path = Path(dirpath, name)
            st = os.lstat(path)
            if st.st_uid != uid:
                raise refused(path, f"belongs to '{_user(st.st_uid)}', not '{_user(uid)}'")
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise refused(path, f"is writable by others ({stat.filemode(st.st_mode)})")


def require_trusted(path: Path, doing: str) -> None:
    """As root: :class:`ServerError` when :func:`untrusted` finds a reason."""
    why = untrusted(path) if os.geteuid() == 0 else None
    if why is not None:
        raise ServerError(
            f"pgembed runs as root and will not {doing} {path}: {why}. Set PGEMBED_HOME to a "
            "directory that only root can change, such as /var/lib/pgembed"
        )


def untrusted(path: Path) -> str | None:
    """Why another OS user than root could change what ``path`` holds, or None.

    Every existing directory on the way (links resolved) must belong to root and be
    writable by no one else, except a sticky directory such as ``/tmp``, where others
    cannot rename or remove what root made; a symbolic link on the way must belong to root
    too; ``path`` itself must not be writable by others even when sticky.
    """
    path = Path(os.path.abspath(path))
    current = Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            break
        if stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
            return f"{current} is a symbolic link owned by '{_user(st.st_uid)}'"
    real = Path(os.path.realpath(path))
    for d in (*reversed(real.parents), real):
        try:
            st = os.stat(d)
        except FileNotFoundError:
            break
        if st.st_uid != 0:
            return f"{d} belongs to '{_user(st.st_uid)}'"
        writable = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0)
        if writable and (d == real or not st.st_mode & stat.S_ISVTX):
            return f"{d} is writable by other users ({stat.filemode(st.st_mode)})"
    return None
