from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Location(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCATION_UNSPECIFIED: _ClassVar[Location]
    LOCATION_LOCAL: _ClassVar[Location]
    LOCATION_REMOTE: _ClassVar[Location]
    LOCATION_BOTH: _ClassVar[Location]

class ArtifactState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_STATE_UNSPECIFIED: _ClassVar[ArtifactState]
    ARTIFACT_STATE_COMPLETE: _ClassVar[ArtifactState]
    ARTIFACT_STATE_CORRUPT: _ClassVar[ArtifactState]
    ARTIFACT_STATE_ORPHAN: _ClassVar[ArtifactState]

class PruneAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRUNE_ACTION_UNSPECIFIED: _ClassVar[PruneAction]
    PRUNE_ACTION_KEEP: _ClassVar[PruneAction]
    PRUNE_ACTION_DELETE: _ClassVar[PruneAction]
    PRUNE_ACTION_LEAVE: _ClassVar[PruneAction]
LOCATION_UNSPECIFIED: Location
LOCATION_LOCAL: Location
LOCATION_REMOTE: Location
LOCATION_BOTH: Location
ARTIFACT_STATE_UNSPECIFIED: ArtifactState
ARTIFACT_STATE_COMPLETE: ArtifactState
ARTIFACT_STATE_CORRUPT: ArtifactState
ARTIFACT_STATE_ORPHAN: ArtifactState
PRUNE_ACTION_UNSPECIFIED: PruneAction
PRUNE_ACTION_KEEP: PruneAction
PRUNE_ACTION_DELETE: PruneAction
PRUNE_ACTION_LEAVE: PruneAction

class PreWriteBackupRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class TableCount(_message.Message):
    __slots__ = ("table", "rows")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    table: str
    rows: int
    def __init__(self, table: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class BackupEnvelope(_message.Message):
    __slots__ = ("run_id", "sha256", "size_bytes", "gpg_fpr", "artifact_ref", "created_at", "tables", "manifest_ref", "server_version", "pg_dump_version", "duration_ms", "reused", "recipient_fprs", "signature_ref", "signer_fpr", "offsite_ref", "offsite_version")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPG_FPR_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_REF_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_REF_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PG_DUMP_VERSION_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FPRS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_REF_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FPR_FIELD_NUMBER: _ClassVar[int]
    OFFSITE_REF_FIELD_NUMBER: _ClassVar[int]
    OFFSITE_VERSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    sha256: str
    size_bytes: int
    gpg_fpr: str
    artifact_ref: str
    created_at: str
    tables: _containers.RepeatedCompositeFieldContainer[TableCount]
    manifest_ref: str
    server_version: str
    pg_dump_version: str
    duration_ms: int
    reused: bool
    recipient_fprs: _containers.RepeatedScalarFieldContainer[str]
    signature_ref: str
    signer_fpr: str
    offsite_ref: str
    offsite_version: str
    def __init__(self, run_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., gpg_fpr: _Optional[str] = ..., artifact_ref: _Optional[str] = ..., created_at: _Optional[str] = ..., tables: _Optional[_Iterable[_Union[TableCount, _Mapping]]] = ..., manifest_ref: _Optional[str] = ..., server_version: _Optional[str] = ..., pg_dump_version: _Optional[str] = ..., duration_ms: _Optional[int] = ..., reused: _Optional[bool] = ..., recipient_fprs: _Optional[_Iterable[str]] = ..., signature_ref: _Optional[str] = ..., signer_fpr: _Optional[str] = ..., offsite_ref: _Optional[str] = ..., offsite_version: _Optional[str] = ...) -> None: ...

class SelftestRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Check(_message.Message):
    __slots__ = ("name", "status", "detail")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[Check.Status]
        PASS: _ClassVar[Check.Status]
        WARN: _ClassVar[Check.Status]
        FAIL: _ClassVar[Check.Status]
    STATUS_UNSPECIFIED: Check.Status
    PASS: Check.Status
    WARN: Check.Status
    FAIL: Check.Status
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: Check.Status
    detail: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[Check.Status, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class SelftestReport(_message.Message):
    __slots__ = ("passed", "checks")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    def __init__(self, passed: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("running_only",)
    RUNNING_ONLY_FIELD_NUMBER: _ClassVar[int]
    running_only: bool
    def __init__(self, running_only: _Optional[bool] = ...) -> None: ...

class LastBackup(_message.Message):
    __slots__ = ("run_id", "created_at", "size_bytes", "sha256")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    created_at: str
    size_bytes: int
    sha256: str
    def __init__(self, run_id: _Optional[str] = ..., created_at: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class StatusReport(_message.Message):
    __slots__ = ("version", "source_commit", "uptime_seconds", "ready", "summary", "key_fpr_tail", "key_expires_at", "last_backup", "artifact_count", "artifact_bytes", "backup_dir", "disk_free_bytes", "tables_in_scope", "running", "signer_fpr", "offsite_mode", "offsite_pending", "offsite_oldest_pending_secs", "offsite_last_error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_COMMIT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    KEY_FPR_TAIL_FIELD_NUMBER: _ClassVar[int]
    KEY_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_BYTES_FIELD_NUMBER: _ClassVar[int]
    BACKUP_DIR_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TABLES_IN_SCOPE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FPR_FIELD_NUMBER: _ClassVar[int]
    OFFSITE_MODE_FIELD_NUMBER: _ClassVar[int]
    OFFSITE_PENDING_FIELD_NUMBER: _ClassVar[int]
    OFFSITE_OLDEST_PENDING_SECS_FIELD_NUMBER: _ClassVar[int]
    OFFSITE_LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    version: str
    source_commit: str
    uptime_seconds: int
    ready: bool
    summary: str
    key_fpr_tail: str
    key_expires_at: str
    last_backup: LastBackup
    artifact_count: int
    artifact_bytes: int
    backup_dir: str
    disk_free_bytes: int
    tables_in_scope: int
    running: _containers.RepeatedCompositeFieldContainer[RunningBackup]
    signer_fpr: str
    offsite_mode: str
    offsite_pending: int
    offsite_oldest_pending_secs: int
    offsite_last_error: str
    def __init__(self, version: _Optional[str] = ..., source_commit: _Optional[str] = ..., uptime_seconds: _Optional[int] = ..., ready: _Optional[bool] = ..., summary: _Optional[str] = ..., key_fpr_tail: _Optional[str] = ..., key_expires_at: _Optional[str] = ..., last_backup: _Optional[_Union[LastBackup, _Mapping]] = ..., artifact_count: _Optional[int] = ..., artifact_bytes: _Optional[int] = ..., backup_dir: _Optional[str] = ..., disk_free_bytes: _Optional[int] = ..., tables_in_scope: _Optional[int] = ..., running: _Optional[_Iterable[_Union[RunningBackup, _Mapping]]] = ..., signer_fpr: _Optional[str] = ..., offsite_mode: _Optional[str] = ..., offsite_pending: _Optional[int] = ..., offsite_oldest_pending_secs: _Optional[int] = ..., offsite_last_error: _Optional[str] = ...) -> None: ...

class RunningBackup(_message.Message):
    __slots__ = ("run_id", "bytes", "elapsed_ms")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    bytes: int
    elapsed_ms: int
    def __init__(self, run_id: _Optional[str] = ..., bytes: _Optional[int] = ..., elapsed_ms: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ArtifactInfo(_message.Message):
    __slots__ = ("run_id", "created_at", "size_bytes", "sha256", "key_fprs", "total_rows", "state", "pinned", "detail", "artifact_state", "location", "offsite_detail")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    KEY_FPRS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_STATE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    OFFSITE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    created_at: str
    size_bytes: int
    sha256: str
    key_fprs: _containers.RepeatedScalarFieldContainer[str]
    total_rows: int
    state: str
    pinned: bool
    detail: str
    artifact_state: ArtifactState
    location: Location
    offsite_detail: str
    def __init__(self, run_id: _Optional[str] = ..., created_at: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., key_fprs: _Optional[_Iterable[str]] = ..., total_rows: _Optional[int] = ..., state: _Optional[str] = ..., pinned: _Optional[bool] = ..., detail: _Optional[str] = ..., artifact_state: _Optional[_Union[ArtifactState, str]] = ..., location: _Optional[_Union[Location, str]] = ..., offsite_detail: _Optional[str] = ...) -> None: ...

class ListReply(_message.Message):
    __slots__ = ("artifacts",)
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactInfo]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[ArtifactInfo, _Mapping]]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("run_id", "all", "expect_sha256", "signer_certs")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    EXPECT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIGNER_CERTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    all: bool
    expect_sha256: str
    signer_certs: bytes
    def __init__(self, run_id: _Optional[str] = ..., all: _Optional[bool] = ..., expect_sha256: _Optional[str] = ..., signer_certs: _Optional[bytes] = ...) -> None: ...

class VerifyResult(_message.Message):
    __slots__ = ("run_id", "ok", "reason", "artifact_ref")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_REF_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    ok: bool
    reason: str
    artifact_ref: str
    def __init__(self, run_id: _Optional[str] = ..., ok: _Optional[bool] = ..., reason: _Optional[str] = ..., artifact_ref: _Optional[str] = ...) -> None: ...

class VerifyReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[VerifyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[VerifyResult, _Mapping]]] = ...) -> None: ...

class PruneRequest(_message.Message):
    __slots__ = ("confirm",)
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    confirm: bool
    def __init__(self, confirm: _Optional[bool] = ...) -> None: ...

class PruneDecision(_message.Message):
    __slots__ = ("run_id", "action", "reason", "size_bytes", "prune_action")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRUNE_ACTION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    action: str
    reason: str
    size_bytes: int
    prune_action: PruneAction
    def __init__(self, run_id: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ..., size_bytes: _Optional[int] = ..., prune_action: _Optional[_Union[PruneAction, str]] = ...) -> None: ...

class PruneReply(_message.Message):
    __slots__ = ("decisions", "applied", "keep_last", "keep_days")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    KEEP_DAYS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[PruneDecision]
    applied: bool
    keep_last: int
    keep_days: int
    def __init__(self, decisions: _Optional[_Iterable[_Union[PruneDecision, _Mapping]]] = ..., applied: _Optional[bool] = ..., keep_last: _Optional[int] = ..., keep_days: _Optional[int] = ...) -> None: ...

class PinRequest(_message.Message):
    __slots__ = ("run_id", "pinned", "note")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    pinned: bool
    note: str
    def __init__(self, run_id: _Optional[str] = ..., pinned: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class PinReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSignerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SignerInfo(_message.Message):
    __slots__ = ("fingerprint", "cert_armored")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CERT_ARMORED_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    cert_armored: str
    def __init__(self, fingerprint: _Optional[str] = ..., cert_armored: _Optional[str] = ...) -> None: ...

class MetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MetricsReply(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...
