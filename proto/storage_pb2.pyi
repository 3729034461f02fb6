from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_OK: _ClassVar[Status]
    STATUS_NOT_FOUND: _ClassVar[Status]
    STATUS_CORRUPT: _ClassVar[Status]
    STATUS_NO_SPACE: _ClassVar[Status]
    STATUS_INVALID: _ClassVar[Status]
    STATUS_INTERNAL: _ClassVar[Status]
STATUS_OK: Status
STATUS_NOT_FOUND: Status
STATUS_CORRUPT: Status
STATUS_NO_SPACE: Status
STATUS_INVALID: Status
STATUS_INTERNAL: Status

class PutFragmentRequest(_message.Message):
    __slots__ = ("chunk_hash", "fragment_index", "placement_group", "data", "checksum", "chunk_size", "epoch")
    CHUNK_HASH_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    chunk_hash: bytes
    fragment_index: int
    placement_group: int
    data: bytes
    checksum: int
    chunk_size: int
    epoch: int
    def __init__(self, chunk_hash: _Optional[bytes] = ..., fragment_index: _Optional[int] = ..., placement_group: _Optional[int] = ..., data: _Optional[bytes] = ..., checksum: _Optional[int] = ..., chunk_size: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class PutFragmentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFragmentRequest(_message.Message):
    __slots__ = ("chunk_hash", "fragment_index", "placement_group")
    CHUNK_HASH_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_FIELD_NUMBER: _ClassVar[int]
    chunk_hash: bytes
    fragment_index: int
    placement_group: int
    def __init__(self, chunk_hash: _Optional[bytes] = ..., fragment_index: _Optional[int] = ..., placement_group: _Optional[int] = ...) -> None: ...

class GetFragmentResponse(_message.Message):
    __slots__ = ("data", "checksum", "chunk_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    checksum: int
    chunk_size: int
    def __init__(self, data: _Optional[bytes] = ..., checksum: _Optional[int] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class DeleteFragmentRequest(_message.Message):
    __slots__ = ("chunk_hash", "fragment_index", "placement_group", "written_before_unix_ms")
    CHUNK_HASH_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_BEFORE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    chunk_hash: bytes
    fragment_index: int
    placement_group: int
    written_before_unix_ms: int
    def __init__(self, chunk_hash: _Optional[bytes] = ..., fragment_index: _Optional[int] = ..., placement_group: _Optional[int] = ..., written_before_unix_ms: _Optional[int] = ...) -> None: ...

class DeleteFragmentResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class FragmentRequest(_message.Message):
    __slots__ = ("request_id", "put", "get", "delete")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    put: PutFragmentRequest
    get: GetFragmentRequest
    delete: DeleteFragmentRequest
    def __init__(self, request_id: _Optional[int] = ..., put: _Optional[_Union[PutFragmentRequest, _Mapping]] = ..., get: _Optional[_Union[GetFragmentRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteFragmentRequest, _Mapping]] = ...) -> None: ...

class FragmentResponse(_message.Message):
    __slots__ = ("request_id", "status", "message", "put", "get", "delete")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    status: Status
    message: str
    put: PutFragmentResponse
    get: GetFragmentResponse
    delete: DeleteFragmentResponse
    def __init__(self, request_id: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., put: _Optional[_Union[PutFragmentResponse, _Mapping]] = ..., get: _Optional[_Union[GetFragmentResponse, _Mapping]] = ..., delete: _Optional[_Union[DeleteFragmentResponse, _Mapping]] = ...) -> None: ...

class FragmentRequestBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[FragmentRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[FragmentRequest, _Mapping]]] = ...) -> None: ...

class FragmentResponseBatch(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[FragmentResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[FragmentResponse, _Mapping]]] = ...) -> None: ...

class ListFragmentsRequest(_message.Message):
    __slots__ = ("placement_group",)
    PLACEMENT_GROUP_FIELD_NUMBER: _ClassVar[int]
    placement_group: int
    def __init__(self, placement_group: _Optional[int] = ...) -> None: ...

class FragmentEntry(_message.Message):
    __slots__ = ("chunk_hash", "fragment_index", "length", "checksum", "chunk_size", "written_at_unix_ms")
    CHUNK_HASH_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    chunk_hash: bytes
    fragment_index: int
    length: int
    checksum: int
    chunk_size: int
    written_at_unix_ms: int
    def __init__(self, chunk_hash: _Optional[bytes] = ..., fragment_index: _Optional[int] = ..., length: _Optional[int] = ..., checksum: _Optional[int] = ..., chunk_size: _Optional[int] = ..., written_at_unix_ms: _Optional[int] = ...) -> None: ...

class ListFragmentsResponse(_message.Message):
    __slots__ = ("fragments",)
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    fragments: _containers.RepeatedCompositeFieldContainer[FragmentEntry]
    def __init__(self, fragments: _Optional[_Iterable[_Union[FragmentEntry, _Mapping]]] = ...) -> None: ...

class SummarizeRequest(_message.Message):
    __slots__ = ("placement_groups",)
    PLACEMENT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    placement_groups: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, placement_groups: _Optional[_Iterable[int]] = ...) -> None: ...

class PlacementGroupSummary(_message.Message):
    __slots__ = ("placement_group", "fragment_index", "fragments", "digest")
    PLACEMENT_GROUP_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    placement_group: int
    fragment_index: int
    fragments: int
    digest: bytes
    def __init__(self, placement_group: _Optional[int] = ..., fragment_index: _Optional[int] = ..., fragments: _Optional[int] = ..., digest: _Optional[bytes] = ...) -> None: ...

class SummarizeResponse(_message.Message):
    __slots__ = ("summaries",)
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    summaries: _containers.RepeatedCompositeFieldContainer[PlacementGroupSummary]
    def __init__(self, summaries: _Optional[_Iterable[_Union[PlacementGroupSummary, _Mapping]]] = ...) -> None: ...

class HintRepairRequest(_message.Message):
    __slots__ = ("placement_groups",)
    PLACEMENT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    placement_groups: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, placement_groups: _Optional[_Iterable[int]] = ...) -> None: ...

class HintRepairResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VolumeStats(_message.Message):
    __slots__ = ("path", "fragments", "bytes_used", "bytes_free")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_USED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREE_FIELD_NUMBER: _ClassVar[int]
    path: str
    fragments: int
    bytes_used: int
    bytes_free: int
    def __init__(self, path: _Optional[str] = ..., fragments: _Optional[int] = ..., bytes_used: _Optional[int] = ..., bytes_free: _Optional[int] = ...) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("node_id", "volumes", "corrupt_fragments_detected")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FRAGMENTS_DETECTED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeStats]
    corrupt_fragments_detected: int
    def __init__(self, node_id: _Optional[str] = ..., volumes: _Optional[_Iterable[_Union[VolumeStats, _Mapping]]] = ..., corrupt_fragments_detected: _Optional[int] = ...) -> None: ...
