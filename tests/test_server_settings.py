"""The embedded server's settings: sized to the machine, overridable, applied on every start."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pgembed import config
from pgembed.errors import ConfigError
from pgembed.server import (
    EmbeddedServer,
    cgroup_cpu_limit,
    cgroup_memory_limit,
    machine_settings,
    sized_settings,
)

MB = 1 << 20
GB = 1 << 30

embedded_only = pytest.mark.skipif(
    bool(os.environ.get("PGEMBED_DATABASE_URL")),
    reason="PGEMBED_DATABASE_URL points at an external server; these test the embedded one",
)

NAMES = (
    "shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem",
    "max_wal_size", "max_worker_processes", "max_parallel_workers",
    "max_parallel_maintenance_workers", "max_parallel_workers_per_gather",
)  # fmt: skip


def _golden(*values: str) -> dict[str, str]:
    return dict(zip(NAMES, values, strict=True))


@pytest.mark.parametrize(
    ("memory", "cores", "expected"),
    [
        # a tiny container: floors of 256 MB memory and one core
        (128 * MB, 0, _golden("64MB", "128MB", "64MB", "4MB", "2GB", "8", "1", "0", "0")),
        (1 * GB, 1, _golden("256MB", "512MB", "128MB", "4MB", "2GB", "8", "1", "0", "0")),
        (4 * GB, 2, _golden("1GB", "2GB", "512MB", "16MB", "2GB", "8", "2", "1", "1")),
        (8 * GB, 4, _golden("2GB", "4GB", "1GB", "32MB", "4GB", "8", "4", "3", "2")),
        # 23.5 GiB, 2 cores: not a power of two, rounded down to whole MB
        (24105 * MB, 2, _golden("6026MB", "12052MB", "3013MB", "64MB", "4GB", "8", "2", "1", "1")),
        (128 * GB, 16, _golden("8GB", "64GB", "4GB", "64MB", "4GB", "20", "16", "15", "4")),
        (512 * GB, 64, _golden("8GB", "256GB", "4GB", "64MB", "4GB", "68", "64", "16", "4")),
    ],
)
def test_sized_settings_golden(memory: int, cores: int, expected: dict[str, str]) -> None:
    assert sized_settings(memory, cores) == expected
    assert sized_settings(memory, cores, shm_bytes=64 * GB) == expected  # shm large enough


def test_small_dev_shm_moves_dynamic_shared_memory_to_sysv() -> None:
    # Docker's default /dev/shm is 64 MB; a parallel HNSW build needs maintenance_work_mem there.
    assert sized_settings(8 * GB, 4, shm_bytes=64 * MB)["dynamic_shared_memory_type"] == "sysv"
    assert "dynamic_shared_memory_type" not in sized_settings(8 * GB, 4, shm_bytes=2 * GB)
    assert sized_settings(8 * GB, 4, shm_bytes=2 * GB - 1)["dynamic_shared_memory_type"] == "sysv"


@pytest.mark.parametrize("cores", [1, 2, 3, 7, 8, 17, 33, 128, 1024])
def test_worker_counts_fit_the_worker_pool(cores: int) -> None:
    s = {k: int(v) for k, v in sized_settings(16 * GB, cores).items() if v.isdigit()}
    assert 0 <= s["max_parallel_maintenance_workers"] < s["max_parallel_workers"] or cores == 1
    assert s["max_parallel_workers_per_gather"] <= s["max_parallel_workers"]
    assert s["max_parallel_workers"] <= s["max_worker_processes"]
    assert s["max_parallel_workers"] == cores


def test_cgroup_v2_limits(tmp_path: Path) -> None:
    app = tmp_path / "user.slice" / "app"
    app.mkdir(parents=True)
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "user.slice" / "memory.max").write_text(f"{4 * GB}\n")
    (app / "memory.max").write_text(f"{2 * GB}\n")
    (app / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    proc = "0::/user.slice/app\n"
    assert cgroup_memory_limit(tmp_path, proc) == 2 * GB
    assert cgroup_cpu_limit(tmp_path, proc) == 2  # 1.5 cores rounds up
    (app / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path, proc) == 4 * GB  # the parent's limit still holds


def test_cgroup_v1_limits(tmp_path: Path) -> None:
    mem, cpu = tmp_path / "memory", tmp_path / "cpu,cpuacct"
    mem.mkdir()
    cpu.mkdir()
    # A container: its own cgroup is mounted at the root, /proc/self/cgroup names the host path.
    proc = "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n"
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # "no limit"
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_memory_limit(tmp_path, proc) is None
    assert cgroup_cpu_limit(tmp_path, proc) is None
    (mem / "memory.limit_in_bytes").write_text(f"{512 * MB}\n")
    (cpu / "cpu.cfs_quota_us").write_text("400000\n")
    assert cgroup_memory_limit(tmp_path, proc) == 512 * MB
    assert cgroup_cpu_limit(tmp_path, proc) == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("shared_buffers=2GB,work_mem=64MB", {"shared_buffers": "2GB", "work_mem": "64MB"}),
        (" Work_Mem = 64MB , ", {"work_mem": "64MB"}),
        ("search_path='a, b',hnsw.ef_search=100", {"search_path": "a, b", "hnsw.ef_search": "100"}),
        ("application_name='it''s'", {"application_name": "it's"}),
    ],
)
def test_pg_settings_parsing(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: dict[str, str]
) -> None:
    monkeypatch.setenv("PGEMBED_PG_SETTINGS", text)
    assert config.pg_settings() == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("shared_buffers", r"'shared_buffers' is not name=value.*shared_buffers=2GB,work_mem"),
        ("shared_buffers=", "is not name=value"),
        ("=2GB", "is not name=value"),
        ("shared buffers=2GB", "is not name=value"),
        ("work_mem=64MB;shared_buffers=1GB", "holds two settings; separate entries with commas"),
        ("work_mem=64MB shared_buffers=1GB", "holds two settings"),
        ("search_path='a, b", "unclosed single quote"),
        ("application_name=it's", "unclosed single quote"),
        ("application_name=a'b'c", "quote the whole value"),
        ("listen_addresses=*", "sets listen_addresses, which pgembed manages"),
        ("HBA_FILE=/tmp/x", "sets hba_file, which pgembed manages"),
    ],
)
def test_pg_settings_malformed(monkeypatch: pytest.MonkeyPatch, text: str, match: str) -> None:
    monkeypatch.setenv("PGEMBED_PG_SETTINGS", text)
    with pytest.raises(ConfigError, match=match):
        config.pg_settings()


# -- a real embedded server --------------------------------------------------------------------


@pytest.fixture
def fresh_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("PGEMBED_PG_SETTINGS", raising=False)
    home = Path(tempfile.mkdtemp(prefix="pgembed-settings-", dir="/tmp"))
    yield home
    if (home / "data" / "PG_VERSION").exists():
        EmbeddedServer(home).stop()
    shutil.rmtree(home, ignore_errors=True)


def _show(url: str, names: tuple[str, ...] | list[str]) -> dict[str, str]:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return {n: conn.execute(sa.text(f"SHOW {n}")).scalar_one() for n in names}
    finally:
        eng.dispose()


def _pending_restart(url: str, name: str) -> bool:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return bool(
                conn.execute(
                    sa.text("SELECT pending_restart FROM pg_settings WHERE name = :n"), {"n": name}
                ).scalar_one()
            )
    finally:
        eng.dispose()


def _wait_for(url: str, name: str, value: str, timeout: float = 15.0) -> str:
    """SHOW name until it reads value (a reload is asynchronous); the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        got = _show(url, [name])[name]
        if got == value or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


@embedded_only
def test_server_runs_with_the_computed_settings(fresh_home: Path) -> None:
    server = EmbeddedServer(fresh_home)
    url = server.start()
    expected = machine_settings()
    assert set(NAMES) <= set(expected)
    assert _show(url, list(expected)) == expected
    # They come from pgembed's own file, included last by postgresql.conf.
    conf = (server.data / "postgresql.conf").read_text()
    assert conf.rstrip().endswith(
        "include_if_exists = 'pgembed.conf'  # pgembed's settings; keep last"
    )
    assert conf.count("include_if_exists = 'pgembed.conf'") == 1
    server.stop()
    server.start()  # a second start adds nothing
    assert (server.data / "postgresql.conf").read_text() == conf


@embedded_only
def test_overrides_win_and_bad_ones_are_refused(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PGEMBED_PG_SETTINGS", "shared_buffers=160MB,work_mem=24MB,hnsw.ef_search=77"
    )
    server = EmbeddedServer(fresh_home)
    url = server.start()
    expected = {**machine_settings(), "shared_buffers": "160MB", "work_mem": "24MB"}
    assert _show(url, list(expected)) == expected
    assert _show(url, ["hnsw.ef_search"]) == {"hnsw.ef_search": "77"}
    server.stop()
    before = (server.data / "pgembed.conf").read_text()
    for bad, match in [
        ("work_mem=banana", r'invalid value for parameter "work_mem": "banana"'),
        ("shared_bufers=1GB", r'unrecognized configuration parameter "shared_bufers"'),
        ("work_mem=1kB", r"outside the valid range for parameter \"work_mem\""),
        ("wal_level=bogus", r"Available values: minimal, replica, logical"),
    ]:
        monkeypatch.setenv("PGEMBED_PG_SETTINGS", bad)
        with pytest.raises(ConfigError, match=rf"PGEMBED_PG_SETTINGS is refused.*{match}"):
            server.start()
        assert not server.status().running  # nothing started with a bad setting
        assert (server.data / "pgembed.conf").read_text() == before  # nor written


@embedded_only
def test_running_server_reloads_and_restart_settings_wait(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = EmbeddedServer(fresh_home)
    url = server.start()
    sized = machine_settings()
    pid = server.status().pid
    monkeypatch.setenv("PGEMBED_PG_SETTINGS", "work_mem=24MB,shared_buffers=160MB")
    server.start()  # another process starting up against the running server
    assert server.status().pid == pid  # not restarted: other clients keep their connections
    assert _wait_for(url, "work_mem", "24MB") == "24MB"  # reloaded at once
    assert _show(url, ["shared_buffers"]) == {"shared_buffers": sized["shared_buffers"]}
    assert _pending_restart(url, "shared_buffers")  # waits for the next start
    server.stop()
    server.start()
    assert _show(url, ["shared_buffers", "work_mem"]) == {
        "shared_buffers": "160MB",
        "work_mem": "24MB",
    }
    assert not _pending_restart(url, "shared_buffers")


@embedded_only
def test_data_dir_of_an_older_pgembed_picks_the_settings_up(fresh_home: Path) -> None:
    server = EmbeddedServer(fresh_home)
    server.start()
    server.stop()
    # As an older pgembed left it: PostgreSQL's defaults, no include, no pgembed.conf.
    conf = server.data / "postgresql.conf"
    conf.write_text(conf.read_text().replace("include_if_exists = 'pgembed.conf'", "#"))
    (server.data / "pgembed.conf").unlink()
    server._start()  # an old server, started the old way
    assert _show(server.url, ["shared_buffers"]) == {"shared_buffers": "128MB"}
    url = server.start()  # the new pgembed, against the running old server
    assert (
        _wait_for(url, "maintenance_work_mem", machine_settings()["maintenance_work_mem"])
        == (machine_settings()["maintenance_work_mem"])
    )
    server.stop()
    server.start()
    assert _show(url, list(NAMES)) == {n: machine_settings()[n] for n in NAMES}


@embedded_only
def test_alter_system_still_wins(fresh_home: Path) -> None:
    server = EmbeddedServer(fresh_home)
    url = server.start()
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text("ALTER SYSTEM SET work_mem = '12MB'"))
    eng.dispose()
    server.stop()
    server.start()
    assert _show(url, ["work_mem"]) == {"work_mem": "12MB"}
