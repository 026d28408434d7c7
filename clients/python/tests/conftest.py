"""pytest fixtures for the client's tests, and the contract with the harness that runs them.

The daemon tests run against REAL cutter-backupd processes that a Rust test
harness starts; it passes their sockets in these environment variables:

  CUTTER_SOCKET_READY    a daemon whose selftest PASSes; backups are taken
                         there (fresh uuid run_ids), so its backup directory
                         must be a throwaway one, readable by this process
                         (the tests re-hash the artifact).
  CUTTER_SOCKET_FAILING  a daemon whose selftest FAILs: its `grants` check
                         FAILs with a detail containing "GRANT SELECT ON";
                         PreWriteBackup there is refused (FAILED_PRECONDITION).
  CUTTER_SOCKET_DENIED   a daemon whose server.allowed_uids exclude this
                         process's uid (os.getuid()), so every call is
                         PERMISSION_DENIED.
  CUTTER_SOCKET_MISSING  a path where nothing listens (no file, or a stale one).

A test that needs one of them FAILS (reported as an error at setup, never a
skip) when it is unset or wrong: a harness that forgot one must not look
green. Tests that need no daemon (tests/test_stubs.py, tests/test_unit.py)
run anywhere; `pytest -m "not daemon"` selects only those.

The health and reflection tests (tests/test_health_reflection.py) expect the
daemon to serve grpc.health.v1.Health and grpc.reflection v1 (or v1alpha).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cutter_backup

CLIENT_DIR = Path(__file__).resolve().parent.parent

SOCKET_VARS = {
    "CUTTER_SOCKET_READY": "a daemon whose selftest PASSes",
    "CUTTER_SOCKET_FAILING": "a daemon whose selftest FAILs on `grants` (GRANT SELECT ON ...)",
    "CUTTER_SOCKET_DENIED": "a daemon whose allowed_uids exclude this uid",
    "CUTTER_SOCKET_MISSING": "a path where nothing listens",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "daemon: needs the CUTTER_SOCKET_* daemons of the Rust harness"
    )


DAEMON_FIXTURES = {"ready_socket", "failing_socket", "denied_socket", "missing_socket"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that uses a daemon socket (directly or through a fixture)
    # is marked `daemon`, so `-m "not daemon"` is the no-daemon subset.
    for item in items:
        if DAEMON_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.daemon)


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [
        f"cutter_backup {cutter_backup.__version__} from {Path(cutter_backup.__file__).parent}"
    ]
    for name in SOCKET_VARS:
        value = os.environ.get(name)
        lines.append(f"{name}={value}" if value else f"{name} is UNSET: tests that need it FAIL")
    return lines


def _listening(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def socket_from_env(name: str) -> str:
    """The path in env var `name`, checked; pytest.fail (not skip) otherwise."""
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(
            f"{name} is unset: it must name {SOCKET_VARS[name]} (see the top of "
            f"{Path(__file__).name}); the Rust harness that runs these tests sets it",
            pytrace=False,
        )
    if name == "CUTTER_SOCKET_MISSING":
        if _listening(value):
            pytest.fail(f"{name}={value}: something listens there", pytrace=False)
        return value
    try:
        mode = os.stat(value).st_mode
    except OSError as e:
        pytest.fail(f"{name}={value}: {e.strerror}; is the daemon running?", pytrace=False)
    if not stat.S_ISSOCK(mode):
        pytest.fail(f"{name}={value} is not a socket", pytrace=False)
    return value


@pytest.fixture(scope="session")
def ready_socket() -> str:
    return socket_from_env("CUTTER_SOCKET_READY")


@pytest.fixture(scope="session")
def failing_socket() -> str:
    return socket_from_env("CUTTER_SOCKET_FAILING")


@pytest.fixture(scope="session")
def denied_socket() -> str:
    return socket_from_env("CUTTER_SOCKET_DENIED")


@pytest.fixture(scope="session")
def missing_socket() -> str:
    return socket_from_env("CUTTER_SOCKET_MISSING")


@pytest.fixture
def ready_client(ready_socket: str) -> Iterator[cutter_backup.Client]:
    with cutter_backup.Client(ready_socket) as c:
        yield c


@pytest.fixture
def failing_client(failing_socket: str) -> Iterator[cutter_backup.Client]:
    with cutter_backup.Client(failing_socket) as c:
        yield c


def child_env() -> dict:
    """Environment for a child Python that imports the same cutter_backup as this one."""
    env = dict(os.environ)
    root = str(Path(cutter_backup.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m cutter_backup ARGS`, captured."""
    return subprocess.run(
        [sys.executable, "-m", "cutter_backup", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
