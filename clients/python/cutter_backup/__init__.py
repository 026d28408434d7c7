"""Python client of cutter-backupd, the orchestrator's pre-write backup daemon.

    from cutter_backup import Client
    with Client("/run/cutter/backupd.sock") as c:
        if c.selftest().passed:
            envelope = c.pre_write_backup(run_id)   # complete, or an exception

BackupRunner is the drop-in for the old backup_runner.py:
ProductionLiveExecutionAdapter(backup_runner=BackupRunner()).
`python -m cutter_backup selftest|status|backup` is the shell face.
"""

from .channel import AUTHORITY_OPTION, CHANNEL_OPTIONS, DEFAULT_SOCKET, make_channel
from .client import DEFAULT_TIMEOUT, Client
from .errors import (
    AlreadyExists,
    BackupFailed,
    CutterBackupError,
    IncompleteEnvelope,
    InvalidRunId,
    PermissionDenied,
    Refused,
    Unavailable,
)
from .models import (
    REQUIRED_FIELDS,
    Check,
    DaemonStatus,
    Envelope,
    LastBackup,
    Report,
    RunningBackup,
)
from .runner import BackupRunner

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Client",
    "BackupRunner",
    "Envelope",
    "Report",
    "Check",
    "DaemonStatus",
    "LastBackup",
    "RunningBackup",
    "REQUIRED_FIELDS",
    "CutterBackupError",
    "Refused",
    "InvalidRunId",
    "Unavailable",
    "PermissionDenied",
    "AlreadyExists",
    "BackupFailed",
    "IncompleteEnvelope",
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT",
    "AUTHORITY_OPTION",
    "CHANNEL_OPTIONS",
    "make_channel",
]
