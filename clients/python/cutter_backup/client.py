"""Client: the orchestrator's connection to cutter-backupd (selftest, status, pre_write_backup).

    with Client("/run/cutter/backupd.sock") as c:
        envelope = c.pre_write_backup(run_id)   # Envelope, or an exception

Every failure is raised as a CutterBackupError subclass (see errors.py);
nothing is returned that the orchestrator would have to check for
completeness itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import grpc

from . import errors
from ._gen import backup_pb2 as pb
from ._gen import backup_pb2_grpc as pb_grpc
from .channel import DEFAULT_SOCKET, make_channel
from .models import DaemonStatus, Envelope, Report

__all__ = ["Client", "DEFAULT_TIMEOUT"]

# Deadline for the quick calls (Selftest queries the database, Status too).
DEFAULT_TIMEOUT = 60.0

T = TypeVar("T")


class Client:
    """A connection to the daemon on `socket`.

    timeout: seconds allowed for Selftest and Status (None: no deadline).
    backup_timeout: seconds allowed for PreWriteBackup; None (the default)
    waits as long as the backup takes, since pg_dump of a large database
    takes what it takes; keepalive pings still notice a daemon that is gone.
    A PreWriteBackup whose deadline passes keeps running in the daemon:
    calling again with the same run_id waits for it and returns its envelope.

    The channel connects lazily, on the first call. Use as a context
    manager, or call close().
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] = DEFAULT_SOCKET,
        timeout: float | None = DEFAULT_TIMEOUT,
        backup_timeout: float | None = None,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.socket = os.fspath(socket)
        self.timeout = timeout
        self.backup_timeout = backup_timeout
        self._channel = make_channel(self.socket, options)
        self._stub = pb_grpc.BackupServiceStub(self._channel)

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Closes the channel; calls after this raise ValueError."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(socket={self.socket!r})"

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel (for other services, e.g. grpc.health.v1)."""
        return self._channel

    @property
    def stub(self) -> pb_grpc.BackupServiceStub:
        """The raw generated stub, for RPCs this class does not wrap (List, Verify, ...)."""
        return self._stub

    # -- calls -------------------------------------------------------------

    def _call(self, name: str, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e, socket=self.socket, what=name) from e

    def selftest(self, timeout: float | None = None) -> Report:
        """Runs every fail-closed check; Report.passed is False when any FAILed.

        A FAILing selftest is a Report, not an exception; exceptions are for
        a call that did not get a report (Unavailable, PermissionDenied, ...).
        """
        reply = self._call(
            "Selftest", self._stub.Selftest, pb.SelftestRequest(), self._timeout(timeout)
        )
        return Report.from_message(reply)

    def status(self, running_only: bool = False, timeout: float | None = None) -> DaemonStatus:
        """Version, readiness, key, last backup, artifacts, disk."""
        reply = self._call(
            "Status",
            self._stub.Status,
            pb.StatusRequest(running_only=running_only),
            self._timeout(timeout),
        )
        return DaemonStatus.from_message(reply)

    def pre_write_backup(self, run_id: str, timeout: float | None = None) -> Envelope:
        """Takes (or, for a run_id that has one, returns) the run's encrypted backup.

        Returns a COMPLETE Envelope. Raises Refused (fail-closed: the message
        names the failing checks), InvalidRunId, Unavailable, PermissionDenied,
        AlreadyExists, BackupFailed, or IncompleteEnvelope (a BackupFailed)
        when the reply lacks sha256, size_bytes, gpg_fpr or artifact_ref.
        timeout: seconds; None uses the client's backup_timeout.
        """
        if not isinstance(run_id, str):
            raise errors.InvalidRunId(f"run_id must be a str, not {type(run_id).__name__}")
        reply = self._call(
            "PreWriteBackup",
            self._stub.PreWriteBackup,
            pb.PreWriteBackupRequest(run_id=run_id),
            self.backup_timeout if timeout is None else timeout,
        )
        envelope = Envelope.from_message(reply)
        if envelope.run_id != run_id:
            raise errors.BackupFailed(
                f"PreWriteBackup: asked for run_id {run_id!r}, the envelope is for "
                f"{envelope.run_id!r}: treat the backup as failed"
            )
        return envelope

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout
