"""BackupRunner: a drop-in for the old backup_runner.py, backed by the daemon.

    adapter = ProductionLiveExecutionAdapter(backup_runner=BackupRunner())

`runner(run_id)` and `runner.pre_write_backup(run_id)` return the envelope
dict the old runner returned ({sha256, size_bytes, gpg_fpr, artifact_ref}
first, then run_id and provenance fields) and raise a CutterBackupError
subclass instead of ever returning an incomplete envelope.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .channel import DEFAULT_SOCKET
from .client import DEFAULT_TIMEOUT, Client
from .models import Report

__all__ = ["BackupRunner"]


class BackupRunner:
    """Callable that takes the pre-write backup of a run through the daemon.

    socket: the daemon's socket. backup_timeout: seconds for one backup
    (None: as long as it takes). minimal: return only the four envelope keys
    of the old runner instead of those plus run_id and provenance.
    The connection is opened on the first call (not at construction), so a
    runner can be built at import time, before a fork.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] = DEFAULT_SOCKET,
        backup_timeout: float | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        minimal: bool = False,
    ) -> None:
        self.socket = os.fspath(socket)
        self.backup_timeout = backup_timeout
        self.timeout = timeout
        self.minimal = minimal
        self._client: Client | None = None
        self._lock = threading.Lock()

    def _get(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = Client(
                    self.socket, timeout=self.timeout, backup_timeout=self.backup_timeout
                )
            return self._client

    def pre_write_backup(self, run_id: str) -> dict[str, Any]:
        """The COMPLETE envelope dict of run_id's backup, or an exception."""
        return self._get().pre_write_backup(run_id).as_dict(minimal=self.minimal)

    def __call__(self, run_id: str) -> dict[str, Any]:
        return self.pre_write_backup(run_id)

    def selftest(self) -> Report:
        """The daemon's selftest (the old `backup_runner.py --selftest`)."""
        return self._get().selftest()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> BackupRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BackupRunner(socket={self.socket!r})"
