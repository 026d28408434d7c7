"""Plain Python values for the daemon's replies: Envelope, Report/Check, DaemonStatus.

These are what the client returns instead of protobuf messages. Envelope
enforces the contract on construction: a backup envelope whose sha256,
size_bytes, gpg_fpr or artifact_ref is empty (or malformed) raises
IncompleteEnvelope, so an incomplete one never reaches the caller.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import IncompleteEnvelope

__all__ = [
    "REQUIRED_FIELDS",
    "Envelope",
    "Check",
    "Report",
    "LastBackup",
    "RunningBackup",
    "DaemonStatus",
    "clean",
]

# The COMPLETE envelope of the old backup_runner.py and of the proto.
REQUIRED_FIELDS: tuple[str, ...] = ("sha256", "size_bytes", "gpg_fpr", "artifact_ref")

_SHA256 = re.compile(r"[0-9a-f]{64}")
# v4 fingerprints are 40 hex digits; v6 ones 64.
_FPR = re.compile(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}")


def _problems(sha256: Any, size_bytes: Any, gpg_fpr: Any, artifact_ref: Any) -> list[str]:
    out = []
    if not sha256:
        out.append("sha256 is empty")
    elif not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        out.append(f"sha256 is not 64 lowercase hex digits: {sha256!r}")
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes <= 0:
        out.append(f"size_bytes is {size_bytes!r}, not a positive integer")
    if not gpg_fpr:
        out.append("gpg_fpr is empty")
    elif not isinstance(gpg_fpr, str) or not _FPR.fullmatch(gpg_fpr):
        out.append(f"gpg_fpr is not a 40-hex-digit fingerprint: {gpg_fpr!r}")
    if not artifact_ref:
        out.append("artifact_ref is empty")
    elif not isinstance(artifact_ref, str) or not os.path.isabs(artifact_ref):
        out.append(f"artifact_ref is not an absolute path: {artifact_ref!r}")
    return out


@dataclass(frozen=True)
class Envelope:
    """A COMPLETE backup envelope (BackupEnvelope in the proto).

    The four fields the orchestrator records are sha256, size_bytes, gpg_fpr
    and artifact_ref; constructing an Envelope with any of them empty raises
    IncompleteEnvelope.
    """

    run_id: str
    sha256: str
    size_bytes: int
    gpg_fpr: str
    artifact_ref: str
    created_at: str = ""
    # "schema.table" -> rows in the dumped snapshot.
    tables: dict[str, int] = field(default_factory=dict)
    manifest_ref: str = ""
    signature_ref: str = ""
    signer_fpr: str = ""
    # True when the daemon returned the existing backup of this run_id.
    reused: bool = False
    recipient_fprs: tuple[str, ...] = ()
    duration_ms: int = 0
    server_version: str = ""
    pg_dump_version: str = ""

    def __post_init__(self) -> None:
        problems = _problems(self.sha256, self.size_bytes, self.gpg_fpr, self.artifact_ref)
        if problems:
            raise IncompleteEnvelope(problems, self._fields(), run_id=self.run_id)
        # Frozen: normalize through object.__setattr__.
        object.__setattr__(self, "tables", dict(self.tables))
        object.__setattr__(self, "recipient_fprs", tuple(self.recipient_fprs))

    @classmethod
    def from_message(cls, msg: Any) -> Envelope:
        """From a cutter.backup.v1.BackupEnvelope; IncompleteEnvelope if incomplete."""
        return cls(
            run_id=msg.run_id,
            sha256=msg.sha256,
            size_bytes=int(msg.size_bytes),
            gpg_fpr=msg.gpg_fpr,
            artifact_ref=msg.artifact_ref,
            created_at=msg.created_at,
            tables={t.table: int(t.rows) for t in msg.tables},
            manifest_ref=msg.manifest_ref,
            signature_ref=msg.signature_ref,
            signer_fpr=msg.signer_fpr,
            reused=bool(msg.reused),
            recipient_fprs=tuple(msg.recipient_fprs),
            duration_ms=int(msg.duration_ms),
            server_version=msg.server_version,
            pg_dump_version=msg.pg_dump_version,
        )

    def _fields(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "gpg_fpr": self.gpg_fpr,
            "artifact_ref": self.artifact_ref,
            "created_at": self.created_at,
            "tables": dict(self.tables),
            "manifest_ref": self.manifest_ref,
            "signature_ref": self.signature_ref,
            "signer_fpr": self.signer_fpr,
            "reused": self.reused,
            "recipient_fprs": list(self.recipient_fprs),
            "duration_ms": self.duration_ms,
            "server_version": self.server_version,
            "pg_dump_version": self.pg_dump_version,
        }

    def as_dict(self, minimal: bool = False) -> dict[str, Any]:
        """The old backup_runner.py's envelope dict.

        Always has sha256, size_bytes, gpg_fpr, artifact_ref (first, in that
        order); unless minimal, also run_id and the provenance fields
        (manifest_ref, signature_ref, signer_fpr, created_at, tables, reused,
        ...), all JSON-serializable.
        """
        full = self._fields()
        out = {k: full[k] for k in REQUIRED_FIELDS}
        if not minimal:
            out.update((k, v) for k, v in full.items() if k not in out)
        return out


@dataclass(frozen=True)
class Check:
    """One selftest check: name ("grants"), status ("PASS"/"WARN"/"FAIL"), detail."""

    name: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        """Not FAIL (WARN passes, as in the daemon)."""
        return self.status in ("PASS", "WARN")

    def line(self) -> str:
        """The line cutterctl prints for it: "  PASS  name         detail"."""
        return f"  {clean(self.status):<4}  {clean(self.name):<12} {clean(self.detail)}"


_STATUS_WORDS = {0: "UNKNOWN", 1: "PASS", 2: "WARN", 3: "FAIL"}


@dataclass(frozen=True)
class Report:
    """A selftest report: passed is True when no check FAILed."""

    passed: bool
    checks: list[Check] = field(default_factory=list)

    @classmethod
    def from_message(cls, msg: Any) -> Report:
        checks = [
            Check(c.name, _STATUS_WORDS.get(int(c.status), "UNKNOWN"), c.detail) for c in msg.checks
        ]
        # Fail closed: a report claiming success next to a FAIL, or a check in
        # an unknown state, does not pass.
        passed = bool(msg.passed) and all(c.ok for c in checks)
        return cls(passed=passed, checks=checks)

    @property
    def failed(self) -> list[Check]:
        """The checks that did not pass (FAIL or an unknown status)."""
        return [c for c in self.checks if not c.ok]

    def check(self, name: str) -> Check | None:
        """The check of that name, or None."""
        return next((c for c in self.checks if c.name == name), None)

    def lines(self) -> list[str]:
        """What `cutterctl selftest` prints: SELFTEST: PASS|FAIL, then a line per check."""
        return [f"SELFTEST: {'PASS' if self.passed else 'FAIL'}"] + [c.line() for c in self.checks]

    def as_dict(self) -> dict[str, Any]:
        """What `cutterctl selftest --json` prints."""
        return {
            "passed": self.passed,
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks
            ],
        }


@dataclass(frozen=True)
class LastBackup:
    run_id: str
    created_at: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class RunningBackup:
    run_id: str
    # Plaintext (SQL) bytes dumped so far.
    bytes: int
    elapsed_ms: int


@dataclass(frozen=True)
class DaemonStatus:
    """The daemon's Status reply (see StatusReport in the proto)."""

    version: str
    source_commit: str
    uptime_seconds: int
    ready: bool
    summary: str
    key_fpr_tail: str
    key_expires_at: str
    last_backup: LastBackup | None
    artifact_count: int
    artifact_bytes: int
    backup_dir: str
    disk_free_bytes: int
    tables_in_scope: int
    running: list[RunningBackup]
    signer_fpr: str

    @classmethod
    def from_message(cls, msg: Any) -> DaemonStatus:
        last = None
        if msg.HasField("last_backup"):
            b = msg.last_backup
            last = LastBackup(b.run_id, b.created_at, int(b.size_bytes), b.sha256)
        return cls(
            version=msg.version,
            source_commit=msg.source_commit,
            uptime_seconds=int(msg.uptime_seconds),
            ready=bool(msg.ready),
            summary=msg.summary,
            key_fpr_tail=msg.key_fpr_tail,
            key_expires_at=msg.key_expires_at,
            last_backup=last,
            artifact_count=int(msg.artifact_count),
            artifact_bytes=int(msg.artifact_bytes),
            backup_dir=msg.backup_dir,
            disk_free_bytes=int(msg.disk_free_bytes),
            tables_in_scope=int(msg.tables_in_scope),
            running=[RunningBackup(r.run_id, int(r.bytes), int(r.elapsed_ms)) for r in msg.running],
            signer_fpr=msg.signer_fpr,
        )

    def as_dict(self) -> dict[str, Any]:
        """What `cutterctl status --json` prints."""
        return {
            "version": self.version,
            "source_commit": self.source_commit,
            "uptime_seconds": self.uptime_seconds,
            "ready": self.ready,
            "summary": self.summary,
            "key_fpr_tail": self.key_fpr_tail,
            "key_expires_at": self.key_expires_at,
            "last_backup": None
            if self.last_backup is None
            else {
                "run_id": self.last_backup.run_id,
                "created_at": self.last_backup.created_at,
                "size_bytes": self.last_backup.size_bytes,
                "sha256": self.last_backup.sha256,
            },
            "artifact_count": self.artifact_count,
            "artifact_bytes": self.artifact_bytes,
            "backup_dir": self.backup_dir,
            "disk_free_bytes": self.disk_free_bytes,
            "tables_in_scope": self.tables_in_scope,
            "signer_fpr": self.signer_fpr,
            "running": [
                {"run_id": r.run_id, "bytes": r.bytes, "elapsed_ms": r.elapsed_ms}
                for r in self.running
            ],
        }


def clean(s: str) -> str:
    """Text from the daemon as a terminal may show it: control characters escaped.

    The same as cutterctl's clean() (Rust char::escape_default for control
    characters), so a planted name cannot rewrite the screen.
    """
    out = []
    for ch in s:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            out.append({"\t": "\\t", "\r": "\\r", "\n": "\\n"}.get(ch, f"\\u{{{o:x}}}"))
        else:
            out.append(ch)
    return "".join(out)
