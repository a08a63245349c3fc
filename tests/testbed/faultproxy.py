"""A TCP proxy that can cut the connection on command: the network fault between vicflow and vCenter.

The simulator keeps its inventory in memory, so killing it would lose the state a trial counts;
cutting the network in front of it keeps that state. While cut, established connections are reset
and new ones are accepted and closed at once (what a dropped VPN or a restarted load balancer does to
a client). TLS passes through untouched, so the server's thumbprint is the simulator's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class FaultProxy:
    """``start()`` listens on 127.0.0.1 (a free port); ``cut()`` and ``restore()`` may be called from any thread."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self.forwarded = 0  # bytes client -> server
        self.connections = 0
        self._sent: dict[int, int] = {}  # bytes each connection sent (client -> server), by connection
        self.cut_fired = threading.Event()
        self._cut_at: int | None = None
        self._down = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-proxy")
        self._server: asyncio.base_events.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._down.is_set()

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore()``."""
        self._down.set()

        def reset_all():
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(reset_all)

    def cut_when_one_connection_sent(self, nbytes: int) -> None:
        """Cut from inside the proxy as soon as one connection has sent ``nbytes``: part-way through an upload
        (a bulk PUT on its own connection), with no watcher polling and so no race with a fast upload."""
        self.cut_fired.clear()
        self._cut_at = nbytes

    def sent(self) -> list[int]:
        """Bytes each connection so far has sent to the server."""
        return list(self._sent.values())

    def restore(self) -> None:
        self._down.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down.is_set():
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer, count=True), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool = False) -> None:
        sent, key = 0, id(reader)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while not self._down.is_set():
                data = await reader.read(65536)
                if not data or self._down.is_set():
                    break
                if count:
                    self.forwarded += len(data)
                    sent += len(data)
                    self._sent[key] = sent
                    if self._cut_at is not None and sent >= self._cut_at:
                        self._cut_at = None
                        self.cut()
                        self.cut_fired.set()
                        break
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
