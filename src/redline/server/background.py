"""A redline server on a free 127.0.0.1 port in a background thread: for tests, benches and notebooks."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator

import uvicorn

from redline.runtime import Runtime
from redline.server.app import create_app
from redline.server.http import uvicorn_config
from redline.server.settings import KEEP_ALIVE_S, ServerSettings


@contextlib.contextmanager
def running_server(runtime: Runtime, settings: ServerSettings | None = None) -> Iterator[str]:
    """Yield the base URL ('http://127.0.0.1:PORT') of a live redline server; stop it afterwards."""
    with serve_in_thread(create_app(runtime, settings)) as url:
        yield url


@contextlib.contextmanager
def serve_in_thread(app: Any, keep_alive_s: float = KEEP_ALIVE_S) -> Iterator[str]:
    """Run any ASGI app with uvicorn on a free 127.0.0.1 port in a thread; yield its base URL."""
    # proto=IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections (no 40 ms Nagle stalls)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, port=port, keep_alive_s=keep_alive_s, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the background server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
