from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_UP: _ClassVar[NodeState]
    NODE_STATE_DOWN: _ClassVar[NodeState]
    NODE_STATE_OUT: _ClassVar[NodeState]
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_UP: NodeState
NODE_STATE_DOWN: NodeState
NODE_STATE_OUT: NodeState

class FailureDomain(_message.Message):
    __slots__ = ("zone", "rack", "host")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    zone: str
    rack: str
    host: str
    def __init__(self, zone: _Optional[str] = ..., rack: _Optional[str] = ..., host: _Optional[str] = ...) -> None: ...

class NodeRegistration(_message.Message):
    __slots__ = ("format_version", "node_id", "address", "failure_domain", "capacity_bytes", "used_bytes", "volumes", "metrics_address", "full")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    node_id: str
    address: str
    failure_domain: FailureDomain
    capacity_bytes: int
    used_bytes: int
    volumes: _containers.RepeatedScalarFieldContainer[str]
    metrics_address: str
    full: bool
    def __init__(self, format_version: _Optional[int] = ..., node_id: _Optional[str] = ..., address: _Optional[str] = ..., failure_domain: _Optional[_Union[FailureDomain, _Mapping]] = ..., capacity_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., volumes: _Optional[_Iterable[str]] = ..., metrics_address: _Optional[str] = ..., full: _Optional[bool] = ...) -> None: ...

class NodeRecord(_message.Message):
    __slots__ = ("node_id", "address", "failure_domain", "capacity_bytes", "state", "state_since_unix_ms", "draining", "full")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    failure_domain: FailureDomain
    capacity_bytes: int
    state: NodeState
    state_since_unix_ms: int
    draining: bool
    full: bool
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., failure_domain: _Optional[_Union[FailureDomain, _Mapping]] = ..., capacity_bytes: _Optional[int] = ..., state: _Optional[_Union[NodeState, str]] = ..., state_since_unix_ms: _Optional[int] = ..., draining: _Optional[bool] = ..., full: _Optional[bool] = ...) -> None: ...

class FormerPosition(_message.Message):
    __slots__ = ("node_id", "position")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    position: int
    def __init__(self, node_id: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...

class ActingSet(_message.Message):
    __slots__ = ("node_ids", "former_positions")
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    FORMER_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    former_positions: _containers.RepeatedCompositeFieldContainer[FormerPosition]
    def __init__(self, node_ids: _Optional[_Iterable[str]] = ..., former_positions: _Optional[_Iterable[_Union[FormerPosition, _Mapping]]] = ...) -> None: ...

class ClusterMap(_message.Message):
    __slots__ = ("format_version", "epoch", "pg_count", "data_fragments", "parity_fragments", "nodes", "acting_sets", "published_unix_ms")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PG_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    PARITY_FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ACTING_SETS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    epoch: int
    pg_count: int
    data_fragments: int
    parity_fragments: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    acting_sets: _containers.RepeatedCompositeFieldContainer[ActingSet]
    published_unix_ms: int
    def __init__(self, format_version: _Optional[int] = ..., epoch: _Optional[int] = ..., pg_count: _Optional[int] = ..., data_fragments: _Optional[int] = ..., parity_fragments: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ..., acting_sets: _Optional[_Iterable[_Union[ActingSet, _Mapping]]] = ..., published_unix_ms: _Optional[int] = ...) -> None: ...
