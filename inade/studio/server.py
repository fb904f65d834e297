"""The studio's web server: Starlette routes around :class:`inade.studio.engine.Studio`.

Routes:

* ``GET /`` the page; ``GET /static/<file>`` its script and style sheet (Starlette's
  ``StaticFiles``, which refuses any path that resolves outside the folder);
* ``GET /api/info`` the model's size, classes and examples;
* ``POST /api/act`` one action (JSON in, JSON out);
* ``POST /api/export`` a zip of the picture, its maps and latents.

One model call runs at a time (a lock; the rest wait their turn in arrival
order, in a worker thread so the server keeps answering). A request that
carries ``client`` and ``seq`` and is ``supersedable`` (a repaint after a stroke)
is answered ``409 superseded`` without running when a newer request of the same
client arrived while it waited. Bodies over ``max_body`` bytes are refused with
413 (never parsed); user errors are 400 with ``{"error": msg}``;
anything else is logged and answered 500, and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from inade.studio.engine import Studio, StudioError

STATIC = Path(__file__).with_name("static")
MAX_BODY = 16 * 2**20  # bytes: a 1024×1024 reference image and its maps fit several times over
MAX_WAITING = 64
DRAIN = 4  # bodies up to DRAIN × the limit are read to the end before the 413
log = logging.getLogger("inade.studio")


class TooLarge(Exception):
    pass


class Scheduler:
    """One model call at a time, in order; stale supersedable requests are dropped."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.latest: dict[str, int] = {}
        self.waiting = 0

    def note(self, req: dict) -> None:
        """Remember the newest ``seq`` seen per ``client``."""
        client, seq = req.get("client"), req.get("seq")
        if isinstance(client, str) and isinstance(seq, int):
            self.latest[client] = max(seq, self.latest.get(client, seq))

    def stale(self, req: dict) -> bool:
        client, seq = req.get("client"), req.get("seq")
        return bool(req.get("supersedable")) and isinstance(seq, int) and seq < self.latest.get(client, seq)

    async def run(self, req: dict, fn):
        """``fn(req)`` in a worker thread once the lock is free; ``None`` when superseded."""
        if self.waiting >= MAX_WAITING:
            raise StudioError(f"the server is busy ({self.waiting} requests waiting): try again in a moment")
        self.note(req)
        self.waiting += 1
        try:
            async with self.lock:
                if self.stale(req):
                    return None
                return await anyio.to_thread.run_sync(fn, req)
        finally:
            self.waiting -= 1


async def _read_json(request: Request, max_body: int) -> dict:
    """The JSON body; :class:`TooLarge` past ``max_body`` bytes. A body up to ``DRAIN`` times the
    limit is read to its end (and dropped) first, so the client is not cut off mid-upload and
    sees the 413 and its message."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > DRAIN * max_body:
        raise TooLarge(int(length))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= max_body:
            chunks.append(chunk)
        elif size > DRAIN * max_body:
            break
    if size > max_body:
        raise TooLarge(size)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudioError(f"the request is not valid JSON ({err})") from err


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


LOOPBACK_NAMES = ["127.0.0.1", "localhost"]


def allowed_hosts(host: str) -> list[str]:
    """``Host`` headers to accept when bound to ``host``: the loopback names for 127.0.0.1
    (so another site cannot reach the studio by DNS rebinding), anything otherwise
    (Starlette's check cannot read an IPv6 ``Host`` header)."""
    return LOOPBACK_NAMES if host in ("127.0.0.1", "localhost") else ["*"]


def create_app(studio: Studio, *, max_body: int = MAX_BODY, hosts: list[str] | None = None) -> Starlette:
    """The ASGI app serving ``studio`` (run it with uvicorn); ``hosts``: accepted ``Host`` headers.

    POST bodies must be ``application/json``: a web page elsewhere can then not post to the
    studio without a CORS preflight, which it never answers.
    """
    scheduler = Scheduler()

    async def guarded(request: Request, fn, respond):
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _error(415, "requests must be JSON (Content-Type: application/json)")
        try:
            req = await _read_json(request, max_body)
            if not isinstance(req, dict):
                raise StudioError("the request must be a JSON object")
            out = await scheduler.run(req, fn)
        except TooLarge:
            return _error(413, f"the upload is too large: the limit is {max_body // 2**20} MB per request")
        except StudioError as err:
            return _error(400, str(err))
        except Exception as err:  # noqa: BLE001 - the server must keep serving
            log.error("request failed:\n%s", traceback.format_exc())
            return _error(500, f"internal error ({type(err).__name__}: {err}); the server log has the details")
        if out is None:
            return JSONResponse({"superseded": True}, status_code=409)
        return respond(out)

    async def index(request: Request):
        return FileResponse(STATIC / "index.html")

    async def info(request: Request):
        return JSONResponse({**studio.info(), "max_body": max_body})

    async def act(request: Request):
        return await guarded(request, studio.act, JSONResponse)

    async def export(request: Request):
        def respond(data: bytes):
            return Response(data, media_type="application/zip",
                            headers={"Content-Disposition": 'attachment; filename="inade-studio.zip"'})

        return await guarded(request, studio.export, respond)

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/act", act, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)] if hosts else []
    return Starlette(routes=routes, middleware=middleware)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one); connections made before
    the server runs wait in its backlog. Raises ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port/`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def make_server(studio: Studio, **kw):
    """A ``uvicorn.Server`` for ``studio`` (quiet: warnings only)."""
    import uvicorn  # noqa: PLC0415

    return uvicorn.Server(uvicorn.Config(create_app(studio, **kw), log_level="warning", access_log=False))


@contextlib.contextmanager
def serving(studio: Studio, host: str = "127.0.0.1", port: int = 0, **kw) -> Iterator[str]:
    """Serve ``studio`` from a background thread; yields its URL, stops on leaving the block.

    For tests and notebooks: ``with serving(Studio(G, E, cfg)) as url: ...``.
    """
    sock = bind(host, port)
    server = make_server(studio, hosts=allowed_hosts(host), **kw)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the studio server did not start")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
