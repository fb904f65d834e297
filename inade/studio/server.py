"""The studio's web server: Starlette routes around :class:`inade.studio.engine.Studio`.

Routes:

* ``GET /`` the page; ``GET /static/<file>`` its script and style sheet (Starlette's
  ``StaticFiles``, which refuses any path that resolves outside the folder);
* ``GET /api/info`` the model's size, classes and examples;
* ``POST /api/session`` a new session id (``{"client": id}``) for the page's requests;
* ``POST /api/act`` one action (JSON in, JSON out);
* ``POST /api/export`` a zip of the picture, its maps and latents.

One model call runs at a time (a lock; the rest wait their turn in arrival
order, in a worker thread so the server keeps answering). A request that
carries a ``client`` session id and is ``supersedable`` (a repaint after a stroke)
is answered ``409 superseded`` without running when a newer request of the same
session arrived while it waited. Session ids are issued by the server
(``secrets.token_urlsafe``), at most ``MAX_SESSIONS`` of them (the least recently
used is forgotten first); an id it does not know is answered ``410`` (the page
asks for a new one), never stored. Bodies over ``max_body`` bytes are refused
with 413 (never parsed), bodies that do not arrive within ``BODY_TIMEOUT`` with
408, and a connection that sends no complete request head within
``HEAD_TIMEOUT`` is closed; user errors are 400 with ``{"error": msg}``;
anything else is logged and answered 500, and the server keeps serving. Bound to
a loopback address, only requests whose ``Host`` is that address or
``localhost`` are served (DNS rebinding).
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from inade.studio.engine import Studio, StudioError

STATIC = Path(__file__).with_name("static")
MAX_BODY = 16 * 2**20  # bytes: a 1024×1024 reference image and its maps fit several times over
MAX_WAITING = 64
MAX_SESSIONS = 256  # session ids kept (a counter each); the least recently used goes first
BODY_TIMEOUT = 30.0  # seconds for a whole request body to arrive
HEAD_TIMEOUT = 15.0  # seconds for a connection to send a complete request head (after connecting or a reply)
DRAIN = 4  # bodies up to DRAIN × the limit are read to the end before the 413
log = logging.getLogger("inade.studio")


class TooLarge(Exception):
    pass


class Stalled(Exception):
    pass


class UnknownSession(Exception):
    pass


class Sessions:
    """Session ids the server issued, each with the arrival number of its newest repaint.

    At most ``cap`` ids, least recently used forgotten first: a client that asks for
    thousands of sessions only pushes out idle ones, whose pages ask for a new id.
    Ids are 24 characters of ``secrets.token_urlsafe``: one page cannot name another's.
    """

    def __init__(self, cap: int = MAX_SESSIONS):
        self.cap = cap
        self._newest: OrderedDict[str, int] = OrderedDict()

    def new(self) -> str:
        sid = secrets.token_urlsafe(18)
        self._newest[sid] = 0
        while len(self._newest) > self.cap:
            self._newest.popitem(last=False)
        return sid

    def arrive(self, sid: str, repaint: bool) -> int:
        """A request of ``sid`` arrived: the arrival number of the newest repaint (this one's if
        ``repaint``); :class:`UnknownSession` if ``sid`` was never issued or is forgotten."""
        if sid not in self._newest:
            raise UnknownSession(sid)
        self._newest[sid] += int(repaint)
        self._newest.move_to_end(sid)
        return self._newest[sid]

    def newest(self, sid: str) -> int:
        return self._newest.get(sid, 0)

    def __len__(self) -> int:
        return len(self._newest)

    def __contains__(self, sid) -> bool:
        return sid in self._newest


class Scheduler:
    """One model call at a time, in order; stale supersedable requests are dropped."""

    def __init__(self, sessions: Sessions):
        self.lock = asyncio.Lock()
        self.sessions = sessions
        self.waiting = 0

    async def run(self, req: dict, fn):
        """``fn(req)`` in a worker thread once the lock is free; ``None`` when superseded (a
        newer repaint of the same session arrived while this one waited)."""
        if self.waiting >= MAX_WAITING:
            raise StudioError(f"the server is busy ({self.waiting} requests waiting): try again in a moment")
        client = req.get("client")
        if client is not None and not isinstance(client, str):
            raise StudioError(f"client: must be the session id the server issued, got {type(client).__name__}")
        repaint = req.get("supersedable") is True
        ticket = self.sessions.arrive(client, repaint) if client is not None else None
        self.waiting += 1
        try:
            async with self.lock:
                if repaint and ticket is not None and ticket < self.sessions.newest(client):
                    return None
                return await anyio.to_thread.run_sync(fn, req)
        finally:
            self.waiting -= 1


async def _read_body(request: Request, max_body: int, timeout: float) -> bytes:
    """The body; :class:`TooLarge` past ``max_body`` bytes, :class:`Stalled` when it has not
    arrived within ``timeout`` seconds. A body up to ``DRAIN`` times the limit is read to its
    end (and dropped) first, so the client is not cut off mid-upload and sees the 413."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > DRAIN * max_body:
        raise TooLarge(int(length))
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size <= max_body:
                    chunks.append(chunk)
                elif size > DRAIN * max_body:
                    break
    except TimeoutError:
        raise Stalled(size) from None
    if size > max_body:
        raise TooLarge(size)
    return b"".join(chunks)


def _parse_json(body: bytes):
    """The decoded JSON; :class:`StudioError` for anything that is not (bad UTF-8, bad syntax,
    integers past Python's 4300 digits, nesting past the recursion limit)."""
    try:
        return json.loads(body or b"null")
    except RecursionError:
        raise StudioError("the request is not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, and int() past 4300 digits
        raise StudioError(f"the request is not valid JSON ({str(err)[:200]})") from None


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def allowed_hosts(address: str) -> frozenset[str] | None:
    """``Host`` names (without port) to serve when bound to ``address``: for a loopback address
    (``127.0.0.0/8``, ``::1``, ``localhost``) that address as a URL writes it (``[::1]``) and
    ``localhost``, so a page of another site cannot reach the studio through a DNS name
    rebound to the loopback; ``None`` (any) otherwise: the studio was opened to the network."""
    name = address.strip().lower()
    if name == "localhost":
        return frozenset({"localhost", "127.0.0.1", "[::1]"})
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None
    if not ip.is_loopback:
        return None
    return frozenset({"localhost", f"[{ip.compressed}]" if ip.version == 6 else ip.compressed})


def host_name(header: str) -> str:
    """The name in a ``Host`` header, port dropped: ``[::1]:8000`` -> ``[::1]``, ``a.b:80`` -> ``a.b``."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostCheck:
    """ASGI middleware: ``400`` unless the request's ``Host`` is one of ``hosts``."""

    def __init__(self, app, hosts: frozenset[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_name(header) not in self.hosts:
                await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(studio: Studio, *, max_body: int = MAX_BODY, hosts: frozenset[str] | None = None,
               sessions: Sessions | None = None, body_timeout: float = BODY_TIMEOUT) -> Starlette:
    """The ASGI app serving ``studio`` (run it with uvicorn); ``hosts``: accepted ``Host`` names
    (see :func:`allowed_hosts`; ``None``: any).

    POST bodies must be ``application/json``: a web page elsewhere can then not post to the
    studio without a CORS preflight, which it never answers.
    """
    sessions = sessions if sessions is not None else Sessions()
    scheduler = Scheduler(sessions)

    async def guarded(request: Request, fn, respond):
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _error(415, "requests must be JSON (Content-Type: application/json)")
        try:
            req = _parse_json(await _read_body(request, max_body, body_timeout))
            if not isinstance(req, dict):
                raise StudioError("the request must be a JSON object")
            out = await scheduler.run(req, fn)
        except TooLarge:
            return _error(413, f"the upload is too large: the limit is {max_body // 2**20} MB per request")
        except Stalled:
            return JSONResponse({"error": f"the request did not arrive within {body_timeout:g} s"}, status_code=408,
                                headers={"Connection": "close"})
        except UnknownSession:
            return _error(410, "this page's session is unknown to the server (expired, or the server restarted): "
                               "reload the page", session="unknown")
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

    async def session(request: Request):
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _error(415, "requests must be JSON (Content-Type: application/json)")
        return JSONResponse({"client": sessions.new(), "max_sessions": sessions.cap})

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
        Route("/api/session", session, methods=["POST"]),
        Route("/api/act", act, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(HostCheck, hosts=hosts)] if hosts is not None else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.sessions = sessions
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one); connections made before
    the server runs wait in its backlog. Raises ``OSError`` (``port`` outside 0 … 65535 too)."""
    if not 0 <= port <= 65535:
        raise OSError(f"the port must be 0 … 65535, got {port}")
    host = host.strip("[]")
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


def _protocol(head_timeout: float):
    """uvicorn's h11 protocol, closing a connection that has not sent a complete request head
    ``head_timeout`` seconds after it connected or after its last reply. (uvicorn's keep-alive
    timer is cancelled by any byte received, so a client sending half a head, or nothing,
    would hold the connection for good.)"""
    from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: PLC0415

    class Protocol(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm_head_timer()

        def _arm_head_timer(self):
            cycle = self.cycle  # a new request head replaces it
            self.loop.call_later(head_timeout, self._head_timeout, cycle)

        def _head_timeout(self, cycle):
            if self.cycle is cycle and not self.transport.is_closing():
                self.transport.close()

    return Protocol


def make_server(studio: Studio, *, head_timeout: float = HEAD_TIMEOUT, **kw):
    """A ``uvicorn.Server`` for ``studio`` (quiet: warnings only)."""
    import uvicorn  # noqa: PLC0415

    return uvicorn.Server(uvicorn.Config(create_app(studio, **kw), http=_protocol(head_timeout),
                                         log_level="warning", access_log=False))


@contextlib.contextmanager
def serving(studio: Studio, host: str = "127.0.0.1", port: int = 0, **kw) -> Iterator[str]:
    """Serve ``studio`` from a background thread; yields its URL, stops on leaving the block.

    For tests and notebooks: ``with serving(Studio(G, E, cfg)) as url: ...``.
    """
    sock = bind(host, port)
    server = make_server(studio, **{"hosts": allowed_hosts(sock.getsockname()[0]), **kw})
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
