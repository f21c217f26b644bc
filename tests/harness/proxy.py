"""A TCP proxy that tests put between a client and a real service to cut and restore "the WAN".

Each `TcpProxy` runs its own asyncio loop in a daemon thread, so synchronous tests drive it with plain calls:

    with TcpProxy(("127.0.0.1", broker_port)) as wan:
        client.connect(wan.host, wan.port)
        wan.cut()          # the uplink drops
        ...
        wan.restore()      # and comes back; the service itself never stopped

What `cut()` does depends on its `CutMode`:

- `RESET` (default): every open connection is aborted with a TCP RST, so the client notices at once; new
  connections are accepted but held, nothing forwarded, until `restore()`, when they go through. This is
  what a gateway sees when its modem or NAT drops its sessions: the old connections die and the new ones
  hang in connect-like limbo until the link is back. A client that gives up on a held connection first
  simply closes it.
- `REFUSE`: open connections are reset and the port stops listening, so new connections fail fast with
  "connection refused" (a peer that is down rather than unreachable).
- `BLACKHOLE`: nothing is closed; bytes stop moving in both directions and are delivered when `restore()` is
  called, like a link that loses packets for a while and recovers before TCP gives up. Clients see only
  their own request timeouts.

Counters (`statistics()`) say how many bytes went each way, so a test can assert traffic really went through
the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["CutMode", "ProxyGroup", "ProxyStatistics", "TcpProxy"]

T = TypeVar("T")

_CHUNK = 64 * 1024
_CALL_TIMEOUT = 10.0


class CutMode(enum.Enum):
    RESET = "reset"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"


@dataclass(frozen=True)
class ProxyStatistics:
    connections_accepted: int
    connections_open: int
    connections_reset: int
    bytes_upstream: int
    """Client to service."""
    bytes_downstream: int
    """Service to client."""
    cut: bool

    def __add__(self, other: ProxyStatistics) -> ProxyStatistics:
        return ProxyStatistics(
            self.connections_accepted + other.connections_accepted,
            self.connections_open + other.connections_open,
            self.connections_reset + other.connections_reset,
            self.bytes_upstream + other.bytes_upstream,
            self.bytes_downstream + other.bytes_downstream,
            self.cut or other.cut,
        )


class _Connection:
    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.dead = False

    def reset(self) -> None:
        """Abort both sides with RST rather than FIN: to the peer the connection broke, it was not closed."""
        self.dead = True
        for writer in (self.client, self.upstream):
            if writer is None or writer.transport.is_closing():
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    def close(self) -> None:
        self.dead = True
        for writer in (self.client, self.upstream):
            if writer is not None and not writer.transport.is_closing():
                writer.close()


class TcpProxy:
    """Forwards every connection accepted on (listen_host, listen_port) to `upstream`."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "proxy",
    ) -> None:
        self.upstream = upstream
        self.host = listen_host
        self.port = listen_port
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-{name}", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        self._mode: CutMode | None = None
        self._accepted = 0
        self._reset = 0
        self._up = 0
        self._down = 0

    # -- control, from any thread -------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    def cut(self, mode: CutMode = CutMode.RESET) -> None:
        self._call(self._cut(mode))

    def restore(self) -> None:
        self._call(self._restore())

    def statistics(self) -> ProxyStatistics:
        return self._call(self._statistics())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"cut ({self._mode.value})" if self._mode else "open"
        return f"<TcpProxy {self.name} {self.address} -> {self.upstream[0]}:{self.upstream[1]} {state}>"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT)

    # -- inside the loop ----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, backlog=128
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self, mode: CutMode) -> None:
        assert self._flowing is not None
        # Let connections the loop has accepted but not yet begun to serve register first: they were open
        # before the cut.
        await asyncio.sleep(0)
        self._mode = mode
        self._flowing.clear()
        if mode is CutMode.REFUSE and self._server is not None:
            self._server.close()
            self._server = None
        if mode in (CutMode.RESET, CutMode.REFUSE):
            for conn in list(self._connections):
                self._reset += 1
                conn.reset()

    async def _restore(self) -> None:
        assert self._flowing is not None
        if self._server is None:
            await self._listen()
        self._mode = None
        self._flowing.set()

    async def _statistics(self) -> ProxyStatistics:
        return ProxyStatistics(
            self._accepted, len(self._connections), self._reset, self._up, self._down, self.is_cut
        )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            conn.reset()
        tasks = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        conn = _Connection(writer)
        self._connections.add(conn)
        self._accepted += 1
        try:
            if self._mode is CutMode.REFUSE:
                # Not listening, so this one was accepted before the cut: it is an open connection.
                self._reset += 1
                conn.reset()
                return
            await self._flowing.wait()
            if conn.dead:
                return
            try:
                up_reader, conn.upstream = await asyncio.open_connection(*self.upstream)
            except OSError:
                # The service itself is down (a killed broker): the client sees what it would see on a
                # direct connection, a broken one.
                conn.reset()
                return
            await asyncio.gather(
                self._pump(reader, conn.upstream, conn, upstream=True),
                self._pump(up_reader, writer, conn, upstream=False),
            )
        finally:
            conn.close()
            self._connections.discard(conn)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Connection, *, upstream: bool
    ) -> None:
        assert self._flowing is not None
        try:
            while not conn.dead:
                data = await src.read(_CHUNK)
                if not data:
                    # Pass the half-close on; the connection ends when both directions have.
                    if not conn.dead and dst.can_write_eof() and not dst.transport.is_closing():
                        dst.write_eof()
                    return
                # While cut, at most one chunk per direction waits here; TCP flow control holds the rest
                # in the kernel, as a dead link would.
                await self._flowing.wait()
                if conn.dead:
                    return
                dst.write(data)
                # Counted before the drain: once the peer has the bytes, the counter already shows them.
                if upstream:
                    self._up += len(data)
                else:
                    self._down += len(data)
                await dst.drain()
        except (ConnectionError, OSError):
            # One side broke: break the other too, as a router between them would.
            conn.reset()


class ProxyGroup:
    """Several proxies cut and restored together: "the WAN" in front of every broker of a cluster."""

    def __init__(self, proxies: Iterable[TcpProxy] = ()) -> None:
        self._proxies = list(proxies)

    def add(self, proxy: TcpProxy) -> None:
        self._proxies.append(proxy)

    def __iter__(self) -> Iterator[TcpProxy]:
        return iter(self._proxies)

    @property
    def is_cut(self) -> bool:
        return any(p.is_cut for p in self._proxies)

    def cut(self, mode: CutMode = CutMode.RESET) -> None:
        for proxy in self._proxies:
            proxy.cut(mode)

    def restore(self) -> None:
        for proxy in self._proxies:
            proxy.restore()

    def statistics(self) -> ProxyStatistics:
        total = ProxyStatistics(0, 0, 0, 0, 0, False)
        for proxy in self._proxies:
            total = total + proxy.statistics()
        return total

    def stop(self) -> None:
        for proxy in self._proxies:
            proxy.stop()
