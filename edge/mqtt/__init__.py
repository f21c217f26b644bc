"""MQTT for edgestream: the built-in listener that sensors publish to, and its sans-I/O packet codec.

`codec` turns bytes into `packets` and back (MQTT 3.1.1 and 5, no I/O); `connection` is the protocol state of
one client connection (packets in, acknowledgements and events out, no I/O); `listener` is the asyncio server
that wires connections to a `Sink`. The client-mode source lives beside them in its own modules.
"""
