"""Serial lines: framings (line, length-prefixed, fixed size, COBS, SLIP) with optional checksums, sans-I/O, and
`SerialSource`, which reads a port through pyserial-asyncio-fast and acknowledges frames once they are durable."""

from .framing import FixedSizeFraming, Frame, Framing, LengthPrefixFraming, LineFraming
from .settings import SerialSourceSettings, load_serial_settings
from .source import SerialSource, SerialSourceStatistics
from .stuffing import CobsFraming, SlipFraming

__all__ = [
    "CobsFraming",
    "FixedSizeFraming",
    "Frame",
    "Framing",
    "LengthPrefixFraming",
    "LineFraming",
    "SerialSource",
    "SerialSourceSettings",
    "SerialSourceStatistics",
    "SlipFraming",
    "load_serial_settings",
]
