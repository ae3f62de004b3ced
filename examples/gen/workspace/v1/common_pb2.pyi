from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Seen(_message.Message):
    __slots__ = ("service", "oid", "tid", "client_id", "scopes")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    OID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    service: str
    oid: str
    tid: str
    client_id: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service: _Optional[str] = ..., oid: _Optional[str] = ..., tid: _Optional[str] = ..., client_id: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "body", "revision", "key_id", "trail")
    ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    body: str
    revision: int
    key_id: str
    trail: _containers.RepeatedCompositeFieldContainer[Seen]
    def __init__(self, id: _Optional[str] = ..., body: _Optional[str] = ..., revision: _Optional[int] = ..., key_id: _Optional[str] = ..., trail: _Optional[_Iterable[_Union[Seen, _Mapping]]] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("id", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("owner", "limit")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    owner: str
    limit: int
    def __init__(self, owner: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class UploadSummary(_message.Message):
    __slots__ = ("stored", "trail")
    STORED_FIELD_NUMBER: _ClassVar[int]
    TRAIL_FIELD_NUMBER: _ClassVar[int]
    stored: int
    trail: _containers.RepeatedCompositeFieldContainer[Seen]
    def __init__(self, stored: _Optional[int] = ..., trail: _Optional[_Iterable[_Union[Seen, _Mapping]]] = ...) -> None: ...
