import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerifyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERIFY_MODE_UNSPECIFIED: _ClassVar[VerifyMode]
    VERIFY_MODE_FULL: _ClassVar[VerifyMode]
    VERIFY_MODE_NONE: _ClassVar[VerifyMode]

class ErrorSide(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_SIDE_UNSPECIFIED: _ClassVar[ErrorSide]
    ERROR_SIDE_SOURCE: _ClassVar[ErrorSide]
    ERROR_SIDE_DESTINATION: _ClassVar[ErrorSide]

class FileState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_STATE_UNSPECIFIED: _ClassVar[FileState]
    FILE_STATE_QUEUED: _ClassVar[FileState]
    FILE_STATE_ACTIVE: _ClassVar[FileState]
    FILE_STATE_VERIFYING: _ClassVar[FileState]
    FILE_STATE_DONE: _ClassVar[FileState]
    FILE_STATE_FAILED: _ClassVar[FileState]
    FILE_STATE_CANCELLED: _ClassVar[FileState]

class TransferState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_STATE_UNSPECIFIED: _ClassVar[TransferState]
    TRANSFER_STATE_QUEUED: _ClassVar[TransferState]
    TRANSFER_STATE_ACTIVE: _ClassVar[TransferState]
    TRANSFER_STATE_DONE: _ClassVar[TransferState]
    TRANSFER_STATE_FAILED: _ClassVar[TransferState]
    TRANSFER_STATE_CANCELLED: _ClassVar[TransferState]

class ReportOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_OUTCOME_UNSPECIFIED: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_ACCEPTED: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_DUPLICATE: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_REJECTED: _ClassVar[ReportOutcome]
VERIFY_MODE_UNSPECIFIED: VerifyMode
VERIFY_MODE_FULL: VerifyMode
VERIFY_MODE_NONE: VerifyMode
ERROR_SIDE_UNSPECIFIED: ErrorSide
ERROR_SIDE_SOURCE: ErrorSide
ERROR_SIDE_DESTINATION: ErrorSide
FILE_STATE_UNSPECIFIED: FileState
FILE_STATE_QUEUED: FileState
FILE_STATE_ACTIVE: FileState
FILE_STATE_VERIFYING: FileState
FILE_STATE_DONE: FileState
FILE_STATE_FAILED: FileState
FILE_STATE_CANCELLED: FileState
TRANSFER_STATE_UNSPECIFIED: TransferState
TRANSFER_STATE_QUEUED: TransferState
TRANSFER_STATE_ACTIVE: TransferState
TRANSFER_STATE_DONE: TransferState
TRANSFER_STATE_FAILED: TransferState
TRANSFER_STATE_CANCELLED: TransferState
REPORT_OUTCOME_UNSPECIFIED: ReportOutcome
REPORT_OUTCOME_ACCEPTED: ReportOutcome
REPORT_OUTCOME_DUPLICATE: ReportOutcome
REPORT_OUTCOME_REJECTED: ReportOutcome

class SourceIdentity(_message.Message):
    __slots__ = ("size", "mtime_ns", "version")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    size: int
    mtime_ns: int
    version: str
    def __init__(self, size: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class RegisterAgentRequest(_message.Message):
    __slots__ = ("name", "hostname", "slots", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    hostname: str
    slots: int
    version: str
    def __init__(self, name: _Optional[str] = ..., hostname: _Optional[str] = ..., slots: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class RegisterAgentResponse(_message.Message):
    __slots__ = ("agent_id", "lease_seconds", "heartbeat_seconds")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    lease_seconds: float
    heartbeat_seconds: float
    def __init__(self, agent_id: _Optional[str] = ..., lease_seconds: _Optional[float] = ..., heartbeat_seconds: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id", "lease_ids", "spooled_results")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    spooled_results: int
    def __init__(self, agent_id: _Optional[str] = ..., lease_ids: _Optional[_Iterable[str]] = ..., spooled_results: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("expires_at", "revoked_lease_ids")
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    expires_at: _timestamp_pb2.Timestamp
    revoked_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LeaseRequest(_message.Message):
    __slots__ = ("want",)
    WANT_FIELD_NUMBER: _ClassVar[int]
    want: int
    def __init__(self, want: _Optional[int] = ...) -> None: ...

class LeasesRequest(_message.Message):
    __slots__ = ("agent_id", "lease_request", "results")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    lease_request: LeaseRequest
    results: _containers.RepeatedCompositeFieldContainer[ChunkResult]
    def __init__(self, agent_id: _Optional[str] = ..., lease_request: _Optional[_Union[LeaseRequest, _Mapping]] = ..., results: _Optional[_Iterable[_Union[ChunkResult, _Mapping]]] = ...) -> None: ...

class LeasesResponse(_message.Message):
    __slots__ = ("batch", "acks")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    batch: LeaseBatch
    acks: _containers.RepeatedCompositeFieldContainer[ReportAck]
    def __init__(self, batch: _Optional[_Union[LeaseBatch, _Mapping]] = ..., acks: _Optional[_Iterable[_Union[ReportAck, _Mapping]]] = ...) -> None: ...

class LeaseBatch(_message.Message):
    __slots__ = ("leases", "revoked_lease_ids")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[ChunkLease]
    revoked_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, leases: _Optional[_Iterable[_Union[ChunkLease, _Mapping]]] = ..., revoked_lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ChunkLease(_message.Message):
    __slots__ = ("lease_id", "transfer_id", "file_id", "chunk_index", "offset", "length", "src_url", "dst_url", "file_size", "source", "expires_at", "ttl_seconds", "verify")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SRC_URL_FIELD_NUMBER: _ClassVar[int]
    DST_URL_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    transfer_id: str
    file_id: int
    chunk_index: int
    offset: int
    length: int
    src_url: str
    dst_url: str
    file_size: int
    source: SourceIdentity
    expires_at: _timestamp_pb2.Timestamp
    ttl_seconds: float
    verify: VerifyMode
    def __init__(self, lease_id: _Optional[str] = ..., transfer_id: _Optional[str] = ..., file_id: _Optional[int] = ..., chunk_index: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., src_url: _Optional[str] = ..., dst_url: _Optional[str] = ..., file_size: _Optional[int] = ..., source: _Optional[_Union[SourceIdentity, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl_seconds: _Optional[float] = ..., verify: _Optional[_Union[VerifyMode, str]] = ...) -> None: ...

class ChunkResult(_message.Message):
    __slots__ = ("report_id", "lease_id", "transfer_id", "file_id", "chunk_index", "offset", "length", "adler32", "xxh3", "bytes", "seconds", "error_kind", "error_message", "retriable", "error_side", "observed_source")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    ADLER32_FIELD_NUMBER: _ClassVar[int]
    XXH3_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_SIDE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_SOURCE_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    lease_id: str
    transfer_id: str
    file_id: int
    chunk_index: int
    offset: int
    length: int
    adler32: int
    xxh3: int
    bytes: int
    seconds: float
    error_kind: str
    error_message: str
    retriable: bool
    error_side: ErrorSide
    observed_source: SourceIdentity
    def __init__(self, report_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., transfer_id: _Optional[str] = ..., file_id: _Optional[int] = ..., chunk_index: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., adler32: _Optional[int] = ..., xxh3: _Optional[int] = ..., bytes: _Optional[int] = ..., seconds: _Optional[float] = ..., error_kind: _Optional[str] = ..., error_message: _Optional[str] = ..., retriable: _Optional[bool] = ..., error_side: _Optional[_Union[ErrorSide, str]] = ..., observed_source: _Optional[_Union[SourceIdentity, _Mapping]] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ("report_id", "outcome", "message")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    outcome: ReportOutcome
    message: str
    def __init__(self, report_id: _Optional[str] = ..., outcome: _Optional[_Union[ReportOutcome, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ReportResultsRequest(_message.Message):
    __slots__ = ("agent_id", "results")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    results: _containers.RepeatedCompositeFieldContainer[ChunkResult]
    def __init__(self, agent_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ChunkResult, _Mapping]]] = ...) -> None: ...

class ReportResultsResponse(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[ReportAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[ReportAck, _Mapping]]] = ...) -> None: ...

class TransferOptions(_message.Message):
    __slots__ = ("chunk_size", "verify", "max_attempts", "recursive", "overwrite")
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    chunk_size: int
    verify: VerifyMode
    max_attempts: int
    recursive: bool
    overwrite: bool
    def __init__(self, chunk_size: _Optional[int] = ..., verify: _Optional[_Union[VerifyMode, str]] = ..., max_attempts: _Optional[int] = ..., recursive: _Optional[bool] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class SubmitTransferRequest(_message.Message):
    __slots__ = ("sources", "destination", "beamline", "priority", "options", "request_id")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    BEAMLINE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedScalarFieldContainer[str]
    destination: str
    beamline: str
    priority: int
    options: TransferOptions
    request_id: str
    def __init__(self, sources: _Optional[_Iterable[str]] = ..., destination: _Optional[str] = ..., beamline: _Optional[str] = ..., priority: _Optional[int] = ..., options: _Optional[_Union[TransferOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SubmitTransferResponse(_message.Message):
    __slots__ = ("transfer_id", "files", "bytes", "skipped")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    files: int
    bytes: int
    skipped: int
    def __init__(self, transfer_id: _Optional[str] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class ErrorCount(_message.Message):
    __slots__ = ("kind", "count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    count: int
    def __init__(self, kind: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class FileStatus(_message.Message):
    __slots__ = ("file_id", "src_url", "dst_url", "size", "state", "bytes_done", "adler32", "failed_attempts", "error_kind", "error_message")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    SRC_URL_FIELD_NUMBER: _ClassVar[int]
    DST_URL_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    ADLER32_FIELD_NUMBER: _ClassVar[int]
    FAILED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file_id: int
    src_url: str
    dst_url: str
    size: int
    state: FileState
    bytes_done: int
    adler32: str
    failed_attempts: int
    error_kind: str
    error_message: str
    def __init__(self, file_id: _Optional[int] = ..., src_url: _Optional[str] = ..., dst_url: _Optional[str] = ..., size: _Optional[int] = ..., state: _Optional[_Union[FileState, str]] = ..., bytes_done: _Optional[int] = ..., adler32: _Optional[str] = ..., failed_attempts: _Optional[int] = ..., error_kind: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class TransferStatus(_message.Message):
    __slots__ = ("transfer_id", "beamline", "priority", "state", "sources", "destination", "files_total", "files_done", "files_failed", "bytes_total", "bytes_done", "submitted_at", "finished_at", "errors", "options")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    BEAMLINE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_FAILED_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    beamline: str
    priority: int
    state: TransferState
    sources: _containers.RepeatedScalarFieldContainer[str]
    destination: str
    files_total: int
    files_done: int
    files_failed: int
    bytes_total: int
    bytes_done: int
    submitted_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    errors: _containers.RepeatedCompositeFieldContainer[ErrorCount]
    options: TransferOptions
    def __init__(self, transfer_id: _Optional[str] = ..., beamline: _Optional[str] = ..., priority: _Optional[int] = ..., state: _Optional[_Union[TransferState, str]] = ..., sources: _Optional[_Iterable[str]] = ..., destination: _Optional[str] = ..., files_total: _Optional[int] = ..., files_done: _Optional[int] = ..., files_failed: _Optional[int] = ..., bytes_total: _Optional[int] = ..., bytes_done: _Optional[int] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., errors: _Optional[_Iterable[_Union[ErrorCount, _Mapping]]] = ..., options: _Optional[_Union[TransferOptions, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("transfer_id", "include_files", "page_size", "page_token", "file_states")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FILES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILE_STATES_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    include_files: bool
    page_size: int
    page_token: str
    file_states: _containers.RepeatedScalarFieldContainer[FileState]
    def __init__(self, transfer_id: _Optional[str] = ..., include_files: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., file_states: _Optional[_Iterable[_Union[FileState, str]]] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("transfer", "files", "next_page_token")
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transfer: TransferStatus
    files: _containers.RepeatedCompositeFieldContainer[FileStatus]
    next_page_token: str
    def __init__(self, transfer: _Optional[_Union[TransferStatus, _Mapping]] = ..., files: _Optional[_Iterable[_Union[FileStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListTransfersRequest(_message.Message):
    __slots__ = ("beamline", "states", "page_size", "page_token")
    BEAMLINE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    beamline: str
    states: _containers.RepeatedScalarFieldContainer[TransferState]
    page_size: int
    page_token: str
    def __init__(self, beamline: _Optional[str] = ..., states: _Optional[_Iterable[_Union[TransferState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTransfersResponse(_message.Message):
    __slots__ = ("transfers", "next_page_token")
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transfers: _containers.RepeatedCompositeFieldContainer[TransferStatus]
    next_page_token: str
    def __init__(self, transfers: _Optional[_Iterable[_Union[TransferStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTransferRequest(_message.Message):
    __slots__ = ("transfer_id", "reason")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    reason: str
    def __init__(self, transfer_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelTransferResponse(_message.Message):
    __slots__ = ("transfer",)
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    transfer: TransferStatus
    def __init__(self, transfer: _Optional[_Union[TransferStatus, _Mapping]] = ...) -> None: ...
