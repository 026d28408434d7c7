"""Unit tests that need no daemon: envelope completeness, error mapping, CLI, channel options.

The "fake daemon" here is a Python gRPC server on a temporary Unix socket
that answers with whatever a test scripts; it checks the client's handling
of replies and status codes, not the real daemon (tests/test_daemon.py does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from conftest import run_cli

import cutter_backup
from cutter_backup import (
    AlreadyExists,
    BackupFailed,
    BackupRunner,
    Client,
    CutterBackupError,
    Envelope,
    IncompleteEnvelope,
    InvalidRunId,
    PermissionDenied,
    Refused,
    Report,
    Unavailable,
)
from cutter_backup import channel as channel_mod
from cutter_backup._gen import backup_pb2 as pb
from cutter_backup._gen import backup_pb2_grpc as pb_grpc
from cutter_backup.errors import from_rpc_error
from cutter_backup.models import clean

SHA = "ab" * 32
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


def complete_message(run_id: str = "run-1", **override: Any) -> pb.BackupEnvelope:
    fields: dict[str, Any] = dict(
        run_id=run_id,
        sha256=SHA,
        size_bytes=1234,
        gpg_fpr=FPR,
        artifact_ref=f"/var/lib/cutter/backups/{run_id}.sql.gpg",
        created_at="2026-05-21T10:00:00Z",
        tables=[pb.TableCount(table="cutter_governance.verify_result", rows=7)],
        manifest_ref=f"/var/lib/cutter/backups/{run_id}.manifest.json",
        signature_ref=f"/var/lib/cutter/backups/{run_id}.manifest.json.sig",
        signer_fpr=FPR,
        recipient_fprs=[FPR],
        duration_ms=42,
    )
    fields.update(override)
    return pb.BackupEnvelope(**fields)


# -- Envelope ------------------------------------------------------------------


def test_complete_envelope_from_message():
    env = Envelope.from_message(complete_message())
    assert env.sha256 == SHA and env.size_bytes == 1234 and env.gpg_fpr == FPR
    assert env.tables == {"cutter_governance.verify_result": 7}
    assert env.recipient_fprs == (FPR,)
    d = env.as_dict()
    assert list(d)[:4] == ["sha256", "size_bytes", "gpg_fpr", "artifact_ref"]
    assert d["run_id"] == "run-1" and d["reused"] is False
    json.dumps(d)  # serializable as is
    assert list(env.as_dict(minimal=True)) == ["sha256", "size_bytes", "gpg_fpr", "artifact_ref"]


@pytest.mark.parametrize("field", ["sha256", "size_bytes", "gpg_fpr", "artifact_ref"])
def test_incomplete_envelope_raises(field):
    msg = complete_message()
    msg.ClearField(field)  # proto3: "" or 0, exactly what an empty field arrives as
    with pytest.raises(IncompleteEnvelope) as ei:
        Envelope.from_message(msg)
    e = ei.value
    assert isinstance(e, BackupFailed) and isinstance(e, CutterBackupError)
    assert field in str(e) and "INCOMPLETE" in str(e)
    assert e.run_id == "run-1" and e.fields["run_id"] == "run-1"


@pytest.mark.parametrize(
    "field,value",
    [
        ("sha256", "ABC"),
        ("sha256", "AB" * 32),  # the contract says lowercase
        ("gpg_fpr", "not-a-fingerprint"),
        ("artifact_ref", "relative/path.sql.gpg"),
    ],
)
def test_malformed_envelope_raises(field, value):
    with pytest.raises(IncompleteEnvelope):
        Envelope.from_message(complete_message(**{field: value}))


def test_envelope_is_frozen():
    env = Envelope.from_message(complete_message())
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.sha256 = "x"  # type: ignore[misc]


# -- Report ----------------------------------------------------------------------


def test_report_fails_closed_on_a_fail_check_or_unknown_status():
    Status = pb.Check.Status
    ok = pb.SelftestReport(
        passed=True,
        checks=[
            pb.Check(name="key", status=Status.PASS),
            pb.Check(name="disk", status=Status.WARN),
        ],
    )
    assert Report.from_message(ok).passed
    lying = pb.SelftestReport(passed=True, checks=[pb.Check(name="grants", status=Status.FAIL)])
    assert not Report.from_message(lying).passed
    unknown = pb.SelftestReport(passed=True, checks=[pb.Check(name="x", status=0)])
    r = Report.from_message(unknown)
    assert not r.passed and r.checks[0].status == "UNKNOWN"


def test_report_lines_match_cutterctl():
    msg = pb.SelftestReport(
        passed=False,
        checks=[
            pb.Check(name="key", status=pb.Check.Status.PASS, detail="ok"),
            pb.Check(name="grants", status=pb.Check.Status.FAIL, detail="run: GRANT\nSELECT"),
        ],
    )
    assert Report.from_message(msg).lines() == [
        "SELFTEST: FAIL",
        "  PASS  key          ok",
        "  FAIL  grants       run: GRANT\\nSELECT",
    ]


def test_clean_escapes_control_characters():
    assert clean("a\x1b[2Jb\tc\r\n\x7f") == "a\\u{1b}[2Jb\\tc\\r\\n\\u{7f}"
    assert clean("…ünïcode") == "…ünïcode"


# -- error mapping ---------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    "code,cls",
    [
        (grpc.StatusCode.FAILED_PRECONDITION, Refused),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRunId),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, PermissionDenied),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.INTERNAL, BackupFailed),
        (grpc.StatusCode.DEADLINE_EXCEEDED, BackupFailed),
        (grpc.StatusCode.UNKNOWN, BackupFailed),
        (grpc.StatusCode.UNIMPLEMENTED, BackupFailed),
    ],
)
def test_code_mapping(code, cls):
    e = from_rpc_error(FakeRpcError(code, "why"), what="PreWriteBackup")
    assert type(e) is cls and e.code == code and e.details == "why"


def test_unreachable_is_told_from_a_daemon_unavailable():
    gone = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: unix:/x: No such file",
        )
    )
    assert isinstance(gone, Unavailable) and gone.unreachable
    db = from_rpc_error(
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "database unavailable: Connection refused")
    )
    assert isinstance(db, Unavailable) and not db.unreachable


def test_refused_lists_failing_checks():
    text = (
        "not ready (fail-closed): grants: cutter_exec lacks privileges; as the schema owner "
        "run: GRANT SELECT ON a.b TO cutter_exec; GRANT SELECT ON a.c TO cutter_exec; "
        "key: BACKUP_GPG_FPR is unset"
    )
    e = from_rpc_error(FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, text))
    assert isinstance(e, Refused)
    assert e.check_names == ("grants", "key")
    assert "GRANT SELECT ON a.c" in e.checks[0]


# -- channel -----------------------------------------------------------------------


def test_channel_sets_default_authority(monkeypatch):
    seen = {}
    real = grpc.insecure_channel

    def fake_insecure_channel(target, options=None):
        seen["target"], seen["options"] = target, dict(options or [])
        return real(target, options=options)

    monkeypatch.setattr(channel_mod.grpc, "insecure_channel", fake_insecure_channel)
    Client("/some/where.sock").close()
    assert seen["target"] == "unix:/some/where.sock"
    assert seen["options"]["grpc.default_authority"] == "localhost"
    assert seen["options"]["grpc.keepalive_time_ms"] > 0
    assert seen["options"]["grpc.max_receive_message_length"] >= 4 * 1024 * 1024
    assert cutter_backup.AUTHORITY_OPTION == ("grpc.default_authority", "localhost")


# -- against a scripted fake daemon ------------------------------------------------


class Scripted(pb_grpc.BackupServiceServicer):
    """Answers each RPC with self.answers[name](request, context)."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[Any, grpc.ServicerContext], Any]] = {}

    def _answer(self, name: str, request: Any, context: grpc.ServicerContext) -> Any:
        return self.answers[name](request, context)

    def PreWriteBackup(self, request, context):
        return self._answer("PreWriteBackup", request, context)

    def Selftest(self, request, context):
        return self._answer("Selftest", request, context)

    def Status(self, request, context):
        return self._answer("Status", request, context)


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple]:
    d = tempfile.mkdtemp(prefix="cutter-fake-")
    path = os.path.join(d, "fake.sock")
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_BackupServiceServicer_to_server(servicer, server)
    server.add_insecure_port("unix:" + path)
    server.start()
    yield servicer, path
    server.stop(0).wait()
    if os.path.exists(path):
        os.unlink(path)
    os.rmdir(d)


def aborts(code: grpc.StatusCode, details: str) -> Callable[[Any, grpc.ServicerContext], Any]:
    def answer(request, context):
        context.abort(code, details)

    return answer


PASSING = pb.SelftestReport(
    passed=True, checks=[pb.Check(name="grants", status=pb.Check.Status.PASS, detail="ok")]
)
FAILING = pb.SelftestReport(
    passed=False,
    checks=[
        pb.Check(name="key", status=pb.Check.Status.PASS, detail="ok"),
        pb.Check(
            name="grants",
            status=pb.Check.Status.FAIL,
            detail="cutter_exec lacks privileges; run: GRANT SELECT ON a.b TO cutter_exec;",
        ),
    ],
)


def test_fake_pre_write_backup_and_runner(fake):
    servicer, path = fake
    servicer.answers["PreWriteBackup"] = lambda req, ctx: complete_message(req.run_id)
    with Client(path) as c:
        env = c.pre_write_backup("run-7")
    assert env.run_id == "run-7" and env.sha256 == SHA
    with BackupRunner(socket=path) as runner:
        d = runner("run-8")
        assert {"sha256", "size_bytes", "gpg_fpr", "artifact_ref"} <= set(d)
        assert runner.pre_write_backup("run-9")["artifact_ref"].endswith("run-9.sql.gpg")
    assert set(BackupRunner(socket=path, minimal=True)("run-10")) == {
        "sha256",
        "size_bytes",
        "gpg_fpr",
        "artifact_ref",
    }


def test_fake_incomplete_reply_raises(fake):
    servicer, path = fake
    servicer.answers["PreWriteBackup"] = lambda req, ctx: complete_message(req.run_id, gpg_fpr="")
    with Client(path) as c, pytest.raises(IncompleteEnvelope, match="gpg_fpr"):
        c.pre_write_backup("run-1")
    with pytest.raises(IncompleteEnvelope):
        BackupRunner(socket=path)("run-1")


def test_fake_envelope_for_another_run_is_refused(fake):
    servicer, path = fake
    servicer.answers["PreWriteBackup"] = lambda req, ctx: complete_message("someone-else")
    with Client(path) as c, pytest.raises(BackupFailed, match="someone-else"):
        c.pre_write_backup("run-1")


@pytest.mark.parametrize(
    "code,cls",
    [
        (grpc.StatusCode.FAILED_PRECONDITION, Refused),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRunId),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.INTERNAL, BackupFailed),
    ],
)
def test_fake_status_codes_become_exceptions(fake, code, cls):
    servicer, path = fake
    servicer.answers["PreWriteBackup"] = aborts(code, "grants: no; database unavailable")
    with Client(path) as c, pytest.raises(cls) as ei:
        c.pre_write_backup("run-1")
    assert type(ei.value) is cls
    if cls is Unavailable:
        assert not ei.value.unreachable  # the daemon answered


def test_fake_selftest_cli(fake):
    servicer, path = fake
    servicer.answers["Selftest"] = lambda req, ctx: PASSING
    r = run_cli("selftest", "--socket", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["SELFTEST: PASS", "  PASS  grants       ok"]
    servicer.answers["Selftest"] = lambda req, ctx: FAILING
    r = run_cli("--socket", path, "selftest", "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["passed"] is False and doc["checks"][1]["status"] == "FAIL"
    servicer.answers["Selftest"] = aborts(grpc.StatusCode.PERMISSION_DENIED, "uid 0 is not allowed")
    r = run_cli("selftest", "--socket", path)
    assert r.returncode == 1 and "PERMISSION_DENIED" in r.stderr


def test_fake_backup_cli(fake):
    servicer, path = fake
    servicer.answers["PreWriteBackup"] = lambda req, ctx: complete_message(req.run_id)
    r = run_cli("backup", "--socket", path, "--run-id", "run-3")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sha256"] == SHA
    servicer.answers["PreWriteBackup"] = lambda req, ctx: complete_message(req.run_id, sha256="")
    r = run_cli("backup", "--socket", path, "--run-id", "run-3")
    assert r.returncode == 1 and "INCOMPLETE" in r.stderr
    assert json.loads(r.stdout)["sha256"] == ""
    servicer.answers["PreWriteBackup"] = aborts(grpc.StatusCode.FAILED_PRECONDITION, "grants: no")
    r = run_cli("backup", "--socket", path, "--run-id", "run-3")
    assert r.returncode == 1 and "grants" in r.stderr


def test_fake_concurrent_calls_share_one_client(fake):
    servicer, path = fake
    servicer.answers["PreWriteBackup"] = lambda req, ctx: complete_message(req.run_id)
    results: dict[str, str] = {}
    with Client(path) as c:

        def backup(i: int) -> None:
            results[str(i)] = c.pre_write_backup(f"r{i}").run_id

        threads = [threading.Thread(target=backup, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {str(i): f"r{i}" for i in range(8)}


# -- CLI usage ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [[], ["nonsense"], ["backup"], ["selftest", "--bogus"], ["backup", "--run-id"]]
)
def test_cli_bad_usage_exits_2(args):
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)


def test_cli_unreachable_exits_3(tmp_path):
    r = run_cli("selftest", "--socket", str(tmp_path / "nothing.sock"))
    assert r.returncode == 3, r.stderr
    assert "cannot reach" in r.stderr
