"""Errors raised by edgestream.edge: how data arrives.

One root, `EdgeError`; subclasses are named after the object and the failure and carry structured fields.
`retriable` tells a caller whether trying again later can succeed without an operator.
Foreign exceptions (paho, pyserial, pymodbus) are mapped to these at the adapter that calls the library.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error raised by edgestream.edge."""

    retriable: bool = False


class ConfigError(EdgeError):
    """A source's settings are invalid. `key` names the setting, `hint` says what to do."""

    def __init__(self, message: str, *, key: str = "", hint: str = "") -> None:
        super().__init__(message if not hint else f"{message} ({hint})")
        self.key = key
        self.hint = hint


class FramingError(EdgeError):
    """Bytes that cannot be delimited into a frame (garbage, overlong, bad escape, bad checksum)."""

    def __init__(self, reason: str, detail: str = "", *, data: bytes = b"") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # short, bounded vocabulary: used as a metric label and a dead-letter header
        self.detail = detail
        self.data = data


class DecodeError(EdgeError):
    """A payload that was delimited but cannot be decoded (bad JSON, wrong register count)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class MalformedPacketError(EdgeError):
    """An MQTT packet that breaks the protocol. `reason_code` is the MQTT 5 reason code to answer with."""

    def __init__(self, message: str, *, reason_code: int = 0x81) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class SourceUnavailableError(EdgeError):
    """A device or broker cannot be reached right now (unplugged adapter, refused connection)."""

    retriable = True

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"source {source!r} unavailable: {detail}")
        self.source = source
        self.detail = detail


class RecordRejectedError(EdgeError):
    """The sink refused a reading for good (too large, topic full with `reject_new`).

    The reading is counted and dropped by the sink; a source acknowledges it to the sender so it is not
    redelivered forever. `reason` is one of the sink's bounded reasons (e.g. "too_large", "full").
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"record rejected ({reason}){': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


class SinkClosedError(EdgeError):
    """The sink is shutting down: the reading was not stored and must not be acknowledged."""

    retriable = True
