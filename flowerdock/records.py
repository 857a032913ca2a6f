"""Carrying a declared object in a Flower Message: CBOR bytes in a ConfigRecord.

Either direction: a ClientApp's reply to the strategy, or the strategy's instruction to a
ClientApp. The record is named by the declaration (`record=`); its one entry is `meta`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

from flwr.app import ConfigRecord, RecordDict

from flowerdock.errors import MessageError
from flowerdock.messages import decode, encode, spec_of

T = TypeVar("T")
PAYLOAD_KEY = "meta"  # the ConfigRecord entry that holds the encoded payload


def record_name(cls: type) -> str:
    return spec_of(cls).record


def to_config_record(obj: Any) -> tuple[str, ConfigRecord]:
    """The (record name, ConfigRecord) pair to put in a Message's content."""
    return record_name(type(obj)), ConfigRecord({PAYLOAD_KEY: encode(obj)})


def from_content(content: RecordDict, cls: type[T], *, versions: Collection[int] | None = None) -> T:
    """Find and decode the object of `cls` in a Message's content, or raise MessageError."""
    name = record_name(cls)
    record = content.get(name)  # not content.config_records, which first copies every ConfigRecord
    if not isinstance(record, ConfigRecord):
        raise MessageError(f"message has no '{name}' ConfigRecord")
    if PAYLOAD_KEY not in record:
        raise MessageError(f"'{name}' record has no '{PAYLOAD_KEY}' entry")
    return decode(record[PAYLOAD_KEY], cls, versions=versions)
