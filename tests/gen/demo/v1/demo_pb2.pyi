from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Caller(_message.Message):
    __slots__ = ("oid", "tid", "client_id", "scopes", "name")
    OID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    oid: str
    tid: str
    client_id: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    name: str
    def __init__(self, oid: _Optional[str] = ..., tid: _Optional[str] = ..., client_id: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., name: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("id", "body", "seen_by_downstream")
    ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SEEN_BY_DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    id: str
    body: str
    seen_by_downstream: Caller
    def __init__(self, id: _Optional[str] = ..., body: _Optional[str] = ..., seen_by_downstream: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class RecordRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class PutSummary(_message.Message):
    __slots__ = ("stored", "seen_by_downstream")
    STORED_FIELD_NUMBER: _ClassVar[int]
    SEEN_BY_DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    stored: int
    seen_by_downstream: Caller
    def __init__(self, stored: _Optional[int] = ..., seen_by_downstream: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class ProfileRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("seen_by_original", "record")
    SEEN_BY_ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    seen_by_original: Caller
    record: Record
    def __init__(self, seen_by_original: _Optional[_Union[Caller, _Mapping]] = ..., record: _Optional[_Union[Record, _Mapping]] = ...) -> None: ...
