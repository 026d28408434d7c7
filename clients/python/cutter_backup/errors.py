"""The exceptions the client raises, and the one place gRPC status codes map to them.

Every exception is a CutterBackupError. Each carries the gRPC `code`
(a grpc.StatusCode, or None when raised locally) and the daemon's `details`.

    CutterBackupError
    +-- Refused            FAILED_PRECONDITION: a selftest check FAILed; `checks`
    |                      holds the failing "name: detail" texts (fail-closed)
    +-- InvalidRunId       INVALID_ARGUMENT: the run_id is not acceptable
    +-- Unavailable        UNAVAILABLE: the database is down, the daemon is
    |                      stopping, or (unreachable=True) the socket cannot be
    |                      reached at all
    +-- PermissionDenied   PERMISSION_DENIED (and UNAUTHENTICATED): this uid is
    |                      not in the daemon's server.allowed_uids
    +-- AlreadyExists      ALREADY_EXISTS: the run_id has files that are not
    |                      today's verified backup; use a new run_id
    +-- BackupFailed       INTERNAL and every other code (DEADLINE_EXCEEDED, ...)
        +-- IncompleteEnvelope  a reply whose sha256/size_bytes/gpg_fpr/
                                artifact_ref is empty or malformed
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import grpc

__all__ = [
    "CutterBackupError",
    "Refused",
    "InvalidRunId",
    "Unavailable",
    "PermissionDenied",
    "AlreadyExists",
    "BackupFailed",
    "IncompleteEnvelope",
    "from_rpc_error",
]


class CutterBackupError(Exception):
    """Base of everything this package raises for a failed call."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    @property
    def code_name(self) -> str:
        """The gRPC code's name ("FAILED_PRECONDITION"), or "LOCAL"."""
        return self.code.name if self.code is not None else "LOCAL"


class Refused(CutterBackupError):
    """The daemon is fail-closed: at least one selftest check FAILed."""

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.checks: tuple[str, ...] = _failing_checks(self.details or message)

    @property
    def check_names(self) -> tuple[str, ...]:
        """Names of the failing checks, e.g. ("grants",)."""
        return tuple(c.split(":", 1)[0] for c in self.checks)


class InvalidRunId(CutterBackupError):
    """The run_id was rejected (letters, digits, '.', '_', '-'; 1-128; no leading '.')."""


class Unavailable(CutterBackupError):
    """Retryable: the database or the daemon is not there right now.

    `unreachable` is True when no connection to the socket could be made (no
    daemon, wrong path, a uid that cannot open the socket); the CLI then
    exits 3, like cutterctl.
    """

    def __init__(self, message: str, *, unreachable: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.unreachable = unreachable


class PermissionDenied(CutterBackupError):
    """The daemon refused this peer's uid (server.allowed_uids)."""


class AlreadyExists(CutterBackupError):
    """The run_id already has files that are not a verified backup of today's setup."""


class BackupFailed(CutterBackupError):
    """The call failed for another reason (INTERNAL, a deadline, ...)."""


class IncompleteEnvelope(BackupFailed):
    """The envelope lacks one of sha256, size_bytes, gpg_fpr, artifact_ref.

    The contract says such a backup must be treated as failed. `problems`
    names each bad field; `fields` is what was received, for the log.
    """

    def __init__(self, problems: Sequence[str], fields: dict[str, Any], run_id: str = "") -> None:
        self.problems = tuple(problems)
        self.fields = dict(fields)
        self.run_id = run_id
        what = f" for run_id {run_id!r}" if run_id else ""
        super().__init__(
            f"INCOMPLETE backup envelope{what} ({'; '.join(self.problems)}): "
            "treat the backup as failed"
        )


# How grpc-core words a failure to reach the peer at all. Anchored at the
# start so a daemon message that merely quotes one ("database unavailable:
# ... Connection refused") is not taken for it.
_TRANSPORT_PREFIXES = (
    "failed to connect to all addresses",
    "connections to all backends failing",
    "empty address list",
    "socket closed",
    "connection reset",
    "connection refused",
    "broken pipe",
    "recvmsg",
    "sendmsg",
    "goaway",
    "endpoint closing",
)


def _is_transport_failure(details: str) -> bool:
    return details.strip().lower().startswith(_TRANSPORT_PREFIXES)


def _failing_checks(text: str) -> tuple[str, ...]:
    """Splits the daemon's "not ready (fail-closed): a: x; b: y" into ("a: x", "b: y").

    A detail may itself contain "; ", so a piece only starts a new check when
    it begins with a check name ("lower_case_name: ").
    """
    _, sep, rest = text.partition("fail-closed): ")
    body = rest if sep else text
    out: list = []
    for piece in body.split("; "):
        if re.match(r"[a-z][a-z0-9_]*: ", piece) or not out:
            out.append(piece)
        else:
            out[-1] += "; " + piece
    return tuple(p for p in out if p)


def from_rpc_error(
    err: grpc.RpcError, *, socket: str = "", what: str = "call"
) -> CutterBackupError:
    """The one mapping from a grpc.RpcError to this package's exceptions."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else None) or str(err)
    kw: dict[str, Any] = {"code": code, "details": details}
    name = code.name if code is not None else "UNKNOWN"
    msg = f"{what}: {name}: {details}"

    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return Refused(msg, **kw)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRunId(msg, **kw)
    if code == grpc.StatusCode.UNAVAILABLE:
        if _is_transport_failure(details):
            return Unavailable(
                f"cannot reach cutter-backupd at {socket or '?'}: {details}. Is it "
                "running (systemctl status cutter-backupd)? Wrong socket path? The "
                "socket is root-only: is this process allowed to open it?",
                unreachable=True,
                **kw,
            )
        return Unavailable(msg, **kw)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(msg, **kw)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(msg, **kw)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and what == "PreWriteBackup":
        msg += (
            " (the backup goes on in the daemon: call again with the same run_id"
            " to wait for it and get its envelope)"
        )
    return BackupFailed(msg, **kw)
