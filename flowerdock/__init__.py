"""flowerdock: declare a message type once, send it safely between a ServerApp and its ClientApps.

    from flowerdock import Key, Range, Size, message, to_config_record, from_content

See docs/messages.md. Everything here is safe to run on bytes from an untrusted peer.
"""

from flowerdock.bounds import Key, Range, Size, Text
from flowerdock.compile import DeclarationError
from flowerdock.errors import MessageError
from flowerdock.messages import decode, encode, message
from flowerdock.records import PAYLOAD_KEY, from_content, record_name, to_config_record
from flowerdock.versions import Version

__all__ = ["PAYLOAD_KEY", "DeclarationError", "Key", "MessageError", "Range", "Size", "Text", "Version", "decode",
           "encode", "from_content", "message", "record_name", "to_config_record"]
