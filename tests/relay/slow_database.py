"""A TCP hop to a database that is a few milliseconds away, and can make one query wait.

Every chunk in either direction is delayed by ``delay_s`` (a PostgreSQL in another zone). ``hold_next``
holds the first chunk sent to the server that contains a marker (the SQL text of a query), and with it
everything after it on that connection, until ``release``: a query that waits, as long as the test
wants, while other connections flow.
"""

from __future__ import annotations

import asyncio
import threading


class SlowDatabaseHop:
    def __init__(self, upstream_port: int, *, delay_s: float):
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.held = threading.Event()  # a query is being held
        self._marker: bytes | None = None
        self._gate: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def url_of(self, database_url: str) -> str:
        """``database_url`` (on this machine's PostgreSQL) through this hop."""
        return database_url.replace(f":{self.upstream_port}/", f":{self.port}/")

    def hold_next(self, marker: bytes) -> None:
        self._marker = marker

    def release(self) -> None:
        if self._gate is not None:
            self._loop.call_soon_threadsafe(self._gate.set)

    def __enter__(self) -> SlowDatabaseHop:
        self._thread.start()
        start = asyncio.start_server(self._connect, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _connect(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(
            self._pipe(client_reader, server_writer, to_server=True),
            self._pipe(server_reader, client_writer, to_server=False),
            return_exceptions=True,
        )
        for writer in (client_writer, server_writer):
            writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_server: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if to_server and self._marker is not None and self._marker in data:
                    self._marker, self._gate = None, asyncio.Event()
                    self.held.set()
                    await self._gate.wait()
                await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
