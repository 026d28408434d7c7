"""Tests of cutter_backup against the REAL daemons of the Rust harness (see conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from conftest import CLIENT_DIR, child_env, run_cli

from cutter_backup import (
    BackupRunner,
    Client,
    InvalidRunId,
    PermissionDenied,
    Refused,
    Unavailable,
)

HEX64 = re.compile(r"[0-9a-f]{64}")
HEX40 = re.compile(r"[0-9A-F]{40}")
FOUR = {"sha256", "size_bytes", "gpg_fpr", "artifact_ref"}


def fresh_run_id() -> str:
    return f"pytest-{uuid.uuid4()}"


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- selftest ------------------------------------------------------------------------


def test_selftest_passes_on_ready(ready_client):
    report = ready_client.selftest()
    assert report.passed, "\n".join(report.lines())
    assert report.checks, "a selftest with no checks"
    assert all(c.status in ("PASS", "WARN") for c in report.checks)
    grants = report.check("grants")
    assert grants is not None and grants.status == "PASS"


def test_selftest_fails_on_failing_naming_grants(failing_client):
    report = failing_client.selftest()
    assert not report.passed
    grants = report.check("grants")
    assert grants is not None, "\n".join(report.lines())
    assert grants.status == "FAIL"
    assert "GRANT SELECT ON" in grants.detail
    assert grants in report.failed


def test_status(ready_client, failing_client):
    ready = ready_client.status()
    assert ready.ready and ready.version and ready.tables_in_scope > 0
    assert os.path.isabs(ready.backup_dir)
    assert not failing_client.status().ready
    assert ready_client.status(running_only=True).version == ready.version


# -- pre_write_backup ---------------------------------------------------------------------


def test_pre_write_backup_returns_a_complete_envelope(ready_client):
    run_id = fresh_run_id()
    env = ready_client.pre_write_backup(run_id)
    assert env.run_id == run_id
    assert HEX64.fullmatch(env.sha256), env.sha256
    assert env.size_bytes > 0
    assert HEX40.fullmatch(env.gpg_fpr), env.gpg_fpr
    assert os.path.isabs(env.artifact_ref) and os.path.isfile(env.artifact_ref)
    # The envelope describes the file that is there.
    assert os.path.getsize(env.artifact_ref) == env.size_bytes
    assert sha256_of(env.artifact_ref) == env.sha256
    assert env.reused is False
    assert env.gpg_fpr in env.recipient_fprs
    assert env.tables and all(rows >= 0 for rows in env.tables.values())
    for ref in (env.manifest_ref, env.signature_ref):
        assert os.path.isabs(ref) and os.path.isfile(ref), ref
    assert HEX40.fullmatch(env.signer_fpr), env.signer_fpr
    assert env.created_at
    assert FOUR <= set(env.as_dict())


def test_retry_of_the_same_run_id_is_reused(ready_client):
    run_id = fresh_run_id()
    first = ready_client.pre_write_backup(run_id)
    again = ready_client.pre_write_backup(run_id)
    assert first.reused is False
    assert again.reused is True
    assert again.sha256 == first.sha256
    assert again.artifact_ref == first.artifact_ref
    assert again.size_bytes == first.size_bytes


def test_refused_on_failing_names_grants(failing_client):
    with pytest.raises(Refused) as ei:
        failing_client.pre_write_backup(fresh_run_id())
    e = ei.value
    assert "grants" in str(e)
    assert "grants" in e.check_names
    assert "GRANT SELECT ON" in str(e)


@pytest.mark.parametrize("bad", ["../x", "", ".hidden", "a/b", "x" * 129])
def test_invalid_run_id(ready_client, bad):
    with pytest.raises(InvalidRunId):
        ready_client.pre_write_backup(bad)


def test_unavailable_on_missing_socket(missing_socket):
    with Client(missing_socket, timeout=10) as c:
        with pytest.raises(Unavailable) as ei:
            c.selftest()
        assert ei.value.unreachable
        with pytest.raises(Unavailable):
            c.pre_write_backup(fresh_run_id(), timeout=10)


def test_permission_denied_on_denied(denied_socket):
    with Client(denied_socket) as c:
        with pytest.raises(PermissionDenied):
            c.selftest()
        with pytest.raises(PermissionDenied):
            c.status()
        with pytest.raises(PermissionDenied) as ei:
            c.pre_write_backup(fresh_run_id())
    assert "allowed_uids" in str(ei.value)


# -- the drop-in runner ------------------------------------------------------------------


def test_backup_runner_returns_the_envelope_dict(ready_socket):
    with BackupRunner(socket=ready_socket) as runner:
        d = runner(fresh_run_id())
        assert FOUR <= set(d)
        assert all(d[k] for k in FOUR)
        d2 = runner.pre_write_backup(fresh_run_id())
        assert FOUR <= set(d2) and d2["sha256"] != ""
        assert runner.selftest().passed
    with BackupRunner(socket=ready_socket, minimal=True) as runner:
        assert set(runner(fresh_run_id())) == FOUR


def test_backup_runner_raises_on_failing(failing_socket):
    with BackupRunner(socket=failing_socket) as runner, pytest.raises(Refused):
        runner(fresh_run_id())


# -- python -m cutter_backup ---------------------------------------------------------------


def test_cli_selftest_exit_0_on_ready(ready_socket):
    r = run_cli("selftest", "--socket", ready_socket)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "SELFTEST: PASS"
    assert len(lines) > 1 and all(re.match(r"  (PASS|WARN)  \S", ln) for ln in lines[1:])
    r = run_cli("selftest", "--socket", ready_socket, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["passed"] is True


def test_cli_selftest_exit_1_on_failing(failing_socket):
    r = run_cli("selftest", "--socket", failing_socket)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "SELFTEST: FAIL"
    assert any(re.match(r"  FAIL  grants\s+.*GRANT SELECT ON", ln) for ln in lines[1:]), r.stdout


def test_cli_selftest_exit_3_on_missing(missing_socket):
    r = run_cli("selftest", "--socket", missing_socket)
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout == ""


def test_cli_selftest_exit_1_on_denied(denied_socket):
    r = run_cli("selftest", "--socket", denied_socket)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "PERMISSION_DENIED" in r.stderr


def test_cli_backup(ready_socket, failing_socket, missing_socket):
    r = run_cli("backup", "--socket", ready_socket, "--run-id", fresh_run_id())
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert FOUR <= set(doc) and HEX64.fullmatch(doc["sha256"])
    r = run_cli("backup", "--socket", failing_socket, "--run-id", fresh_run_id())
    assert r.returncode == 1 and "grants" in r.stderr
    r = run_cli("backup", "--socket", ready_socket, "--run-id", "../x")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr
    r = run_cli("backup", "--socket", missing_socket, "--run-id", fresh_run_id())
    assert r.returncode == 3


# -- the README's example -----------------------------------------------------------------


@pytest.mark.parametrize(
    "readme", [CLIENT_DIR / "README.md", CLIENT_DIR.parent.parent / "README.md"], ids=["client", "project"]
)
def test_readme_example_runs(ready_socket, readme):
    """The five-line example in both READMEs runs as written (socket and run_id swapped in)."""
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"<!-- example -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"{readme} lost its <!-- example --> block"
    code = m.group(1)
    assert len(code.strip().splitlines()) <= 6, code
    assert '"/run/cutter/backupd.sock"' in code
    run_id = re.search(r'pre_write_backup\("([^"]+)"\)', code)
    assert run_id, code
    code = code.replace('"/run/cutter/backupd.sock"', repr(ready_socket)).replace(
        run_id.group(1), fresh_run_id()
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "True"
    assert "'sha256': '" in r.stdout
