from . import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DataKey(_message.Message):
    __slots__ = ("key_id", "key", "seen")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    key: bytes
    seen: _common_pb2.Seen
    def __init__(self, key_id: _Optional[str] = ..., key: _Optional[bytes] = ..., seen: _Optional[_Union[_common_pb2.Seen, _Mapping]] = ...) -> None: ...
