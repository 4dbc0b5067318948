"""An auth server for tests (the relay-0.17 §1 contract, server side): an HTTP server on loopback
in its own thread that records every POSTed Request and answers with what the test's `decide`
returns for it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# decide(request) -> (status, body: a JSON value or raw bytes, seconds to wait before answering)
Decide = Callable[[dict[str, Any]], tuple[int, Any, float]]


def grant(publish: list[str] | None = None, subscribe: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {"publish": publish if publish is not None else ["**"],
            "subscribe": subscribe if subscribe is not None else ["**"], **more}


def always(status: int = 200, body: Any = None, delay: float = 0.0) -> Decide:
    return lambda _request: (status, grant() if body is None and status == 200 else (body or b""), delay)


class AuthServer:
    def __init__(self, decide: Decide | None = None) -> None:
        self.decide = decide or always()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                request = json.loads(raw)
                request["_raw"] = raw
                request["_path"] = self.path
                with outer.lock:
                    outer.requests.append(request)
                status, body, delay = outer.decide(request)
                if delay:
                    time.sleep(delay)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the relay gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/auth"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AuthServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self, event: str, **match: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["event"] == event and all(r.get(k) == v for k, v in match.items())]
