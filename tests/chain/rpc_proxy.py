"""A real HTTP hop between the chain client and anvil that can misbehave on command.

Faults are the ones an operator meets with a public RPC provider: 503s before the request reaches the
node, a connection dropped *after* the node acted (the client cannot tell whether its transaction got
through), and eth_getLogs refusing block ranges over a limit.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FaultyRpcProxy:
    def __init__(self, upstream_url: str):
        self.upstream_url = upstream_url
        self.calls: Counter[str] = Counter()
        self.max_log_range: int | None = None
        self.num_refused_log_ranges = 0
        self.strip_log_timestamps = False  # answer eth_getLogs as nodes do that omit blockTimestamp
        self.unsupported: set[str] = set()  # methods answered "method not found", as some nodes do
        self._fail: dict[str | None, int] = {}  # method (None: any) -> requests left to answer 503
        self._drop: dict[str, int] = {}  # method -> responses left to drop after forwarding
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, num_requests: int, method: str | None = None) -> None:
        """Answer HTTP 503 to the next requests (of ``method``) without forwarding them."""
        with self._lock:
            self._fail[method] = num_requests

    def drop_response_next(self, num_requests: int, method: str) -> None:
        """Forward the next ``method`` requests to anvil, then close the connection without an answer."""
        with self._lock:
            self._drop[method] = num_requests

    def __enter__(self) -> FaultyRpcProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, table: dict[Any, int], key: Any) -> bool:
        with self._lock:
            if table.get(key, 0) > 0:
                table[key] -= 1
                return True
            return False

    def _refuse_range(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.max_log_range is None or body.get("method") != "eth_getLogs":
            return None
        query = body["params"][0]
        span = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
        if span <= self.max_log_range:
            return None
        with self._lock:
            self.num_refused_log_ranges += 1
        message = f"query exceeds max block range {self.max_log_range}"
        return {"jsonrpc": "2.0", "id": body.get("id"), "error": {"code": -32005, "message": message}}

    @staticmethod
    def _without_timestamps(answer: bytes) -> bytes:
        reply = json.loads(answer)
        for log in reply.get("result") or []:
            log.pop("blockTimestamp", None)
        return json.dumps(reply).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                method = body.get("method", "batch")
                with proxy._lock:
                    proxy.calls[method] += 1
                if proxy._take(proxy._fail, method) or proxy._take(proxy._fail, None):
                    self.send_error(503, "upstream unavailable")
                    return
                if method in proxy.unsupported:
                    error = {"code": -32601, "message": f"the method {method} does not exist"}
                    self._reply(json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "error": error}).encode())
                    return
                refusal = proxy._refuse_range(body)
                if refusal is not None:
                    self._reply(json.dumps(refusal).encode())
                    return
                request = urllib.request.Request(
                    proxy.upstream_url, data=raw, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as upstream:
                    answer = upstream.read()
                if proxy._take(proxy._drop, method):
                    self.close_connection = True  # the node acted; the client never hears of it
                    return
                if method == "eth_getLogs" and proxy.strip_log_timestamps:
                    answer = proxy._without_timestamps(answer)
                self._reply(answer)

            def _reply(self, payload: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
