"""What a team with its own client does: plain grpcio, the generated stubs, the documented option.

No cutter_backup.Client here on purpose: these tests pin down the wire
contract that README.md documents for other clients (Go, Java, grpcurl), and
the :authority trap that makes the option necessary.
"""

from __future__ import annotations

import os
import re
import uuid

import grpc
import pytest

from cutter_backup._gen import backup_pb2, backup_pb2_grpc

DOCUMENTED_OPTIONS = [("grpc.default_authority", "localhost")]


def test_plain_grpcio_with_documented_options(ready_socket):
    run_id = f"pytest-plain-{uuid.uuid4()}"
    with grpc.insecure_channel("unix:" + ready_socket, options=DOCUMENTED_OPTIONS) as channel:
        stub = backup_pb2_grpc.BackupServiceStub(channel)
        report = stub.Selftest(backup_pb2.SelftestRequest(), timeout=60)
        assert report.passed, report
        assert any(c.name == "grants" and c.status == backup_pb2.Check.PASS for c in report.checks)
        env = stub.PreWriteBackup(backup_pb2.PreWriteBackupRequest(run_id=run_id), timeout=600)
    assert env.run_id == run_id
    assert re.fullmatch(r"[0-9a-f]{64}", env.sha256)
    assert env.size_bytes > 0
    assert re.fullmatch(r"[0-9A-F]{40}", env.gpg_fpr)
    assert os.path.isabs(env.artifact_ref) and os.path.isfile(env.artifact_ref)


def test_without_the_authority_option_calls_fail(ready_socket):
    """The trap: grpcio >= 1.57 sends the socket path as :authority; the daemon's
    HTTP/2 stack resets the stream. If this test starts failing (the call
    succeeds), the trap is gone and the docs can say so."""
    with grpc.insecure_channel("unix:" + ready_socket) as channel:
        stub = backup_pb2_grpc.BackupServiceStub(channel)
        with pytest.raises(grpc.RpcError) as ei:
            stub.Selftest(backup_pb2.SelftestRequest(), timeout=30)
    code = ei.value.code()
    assert code != grpc.StatusCode.OK
    # Recorded for the log: typically INTERNAL "Stream removed".
    print(f"without grpc.default_authority: {code.name}: {ei.value.details()}")
    # And with the option, the same call on the same socket works.
    with grpc.insecure_channel("unix:" + ready_socket, options=DOCUMENTED_OPTIONS) as channel:
        stub = backup_pb2_grpc.BackupServiceStub(channel)
        assert stub.Selftest(backup_pb2.SelftestRequest(), timeout=60).passed
