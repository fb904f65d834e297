"""INADE Studio against a hostile client: sessions, Host names, stalled connections, malformed fields, start-up.

Each test plays the attacker of issue 18: a second client that forges or replays
another page's session id, a DNS-rebound name, a client that sends half a request
and waits, fields of every wrong shape (found by hypothesis), a command line that
cannot start. The server must answer a clear 4xx (never 500, never a hang), keep
serving, and never let one client change what another gets.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import time
import zlib
from urllib.parse import urlparse

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("pydantic")

from _cli import assert_user_error, run_cli  # noqa: E402
from _studio import png_b64, post, tiny_studio, write_checkpoint  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from inade.studio import StudioError  # noqa: E402
from inade.studio.server import Sessions, allowed_hosts, host_name, serving  # noqa: E402


@pytest.fixture(scope="module")
def studio():
    return tiny_studio()


@pytest.fixture(scope="module")
def state(studio):
    return studio.act({"action": "example", "name": "scene 0", "seed": 3})["state"]


def _session(url) -> str:
    status, out = post(url + "api/session", {})
    assert status == 200, out
    return out["client"]


def _edit(url, client, state, seed=1):
    return post(url + "api/act", {"action": "edit", "client": client, "supersedable": True, "seed": seed,
                                  "state": state})


# ---------------------------------------------------------------------------
# Sessions: issued by the server, bounded, one client cannot touch another's
# ---------------------------------------------------------------------------


def test_a_hostile_client_cannot_touch_another_clients_session(studio, state):
    sessions = Sessions(cap=8)
    with serving(studio, sessions=sessions) as url:
        victim, hostile = _session(url), _session(url)
        assert victim != hostile and len(victim) >= 24 and len(sessions) == 2
        # Forged and guessed ids (the old page's ids were the client's own choice, e.g. "page"):
        # refused as unknown, and never stored, however long.
        for forged in ["page", victim[:-1] + ("A" if victim[-1] != "A" else "B"), victim.upper(), "x" * 2**20]:
            status, out = _edit(url, forged, state)
            assert status == 410 and out["session"] == "unknown", (forged[:30], out)
        assert len(sessions) == 2 and "page" not in sessions
        # The old attack: the victim's id with a huge sequence number. A sequence number is no
        # field of the request any more (400), and repaints the hostile sends under the victim's
        # id (had it learnt it) only supersede repaints already waiting, never later ones.
        status, out = post(url + "api/act", {"action": "edit", "client": victim, "seq": 10**18, "supersedable": True,
                                             "seed": 1, "state": state})
        assert status == 400 and "seq: unknown field" in out["error"]
        for k in range(3):
            assert _edit(url, victim, state, seed=k)[0] == 200  # stand-in for the hostile's replays
            assert _edit(url, hostile, state, seed=k)[0] == 200
        for k in range(3):
            status, out = _edit(url, victim, state, seed=10 + k)
            assert status == 200 and "state" in out, out


def test_sessions_are_bounded_and_an_evicted_page_gets_a_new_one(studio, state):
    sessions = Sessions(cap=4)
    with serving(studio, sessions=sessions) as url:
        victim = _session(url)
        flood = [_session(url) for _ in range(10)]  # a client asking for many sessions
        assert len(sessions) == 4 and victim not in sessions and set(flood[-4:]) == set(sessions._newest)
        status, out = _edit(url, victim, state)
        assert status == 410 and out["session"] == "unknown" and "reload" in out["error"]
        again = _session(url)  # what the page does on that answer
        assert _edit(url, again, state)[0] == 200


# ---------------------------------------------------------------------------
# Host names: every loopback bind refuses a DNS-rebound name
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bound, host, served", [
    ("127.0.0.1", "127.0.0.1:8000", True), ("127.0.0.1", "localhost:8000", True),
    ("127.0.0.1", "attacker.example:8000", False), ("127.0.0.1", "127.0.0.1.nip.io", False),
    ("127.0.0.2", "127.0.0.2:8000", True), ("127.0.0.2", "attacker.example", False),
    ("127.0.0.2", "127.0.0.1", False),
    ("::1", "[::1]:8000", True), ("::1", "[::1]", True), ("::1", "localhost", True),
    ("::1", "attacker.example", False), ("::1", "[::2]:8000", False), ("::1", "", False),
    ("localhost", "localhost", True), ("localhost", "evil.test", False),
], ids=lambda v: str(v).replace(":", "_") if not isinstance(v, bool) else ("served" if v else "refused"))
def test_loopback_binds_serve_only_their_own_host_names(bound, host, served):
    assert (host_name(host) in allowed_hosts(bound)) == served


@pytest.mark.parametrize("bound", ["0.0.0.0", "::", "192.168.1.7"])
def test_a_bind_open_to_the_network_checks_no_host(bound):
    assert allowed_hosts(bound) is None


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _get_with_host(url, host):
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(f"GET /api/info HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("bound", ["::1", "127.0.0.2"])
def test_a_server_on_ipv6_or_another_loopback_address_refuses_rebound_names(studio, bound):
    if bound == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine (the check is tested directly above)")
    with serving(studio, host=bound) as url:
        port = urlparse(url).port
        own = f"[{bound}]:{port}" if ":" in bound else f"{bound}:{port}"
        assert _get_with_host(url, own) == 200
        assert _get_with_host(url, f"attacker.example:{port}") == 400
        assert _get_with_host(url, f"localhost:{port}") == 200


# ---------------------------------------------------------------------------
# Slow clients: a stalled body or head does not hold the connection
# ---------------------------------------------------------------------------


def _read_until_closed(s: socket.socket, limit: float) -> tuple[bytes, float]:
    t0, data = time.monotonic(), b""
    s.settimeout(limit)
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit} s (got {data[:80]!r})")
    return data, time.monotonic() - t0


def test_a_stalled_body_is_answered_408_and_the_connection_closed(studio):
    with serving(studio, body_timeout=1.0, head_timeout=2.0) as url:
        u = urlparse(url)
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(f"POST /api/act HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nContent-Type: application/json\r\n"
                      "Content-Length: 1000\r\n\r\n{\"action\": ".encode())  # then nothing
            data, waited = _read_until_closed(s, 20)
        assert data.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in data, data[:200]
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(b"GET /api/info HTTP/1.1\r\nHo")  # half a request head, then nothing
            data, waited = _read_until_closed(s, 20)
        assert data == b""
        assert _get_with_host(url, f"{u.hostname}:{u.port}") == 200  # and the server goes on


# ---------------------------------------------------------------------------
# Malformed fields: 400 with a message naming the field, never 500
# ---------------------------------------------------------------------------

FIELDS = ["action", "client", "supersedable", "seed", "name", "label_png", "inst_png", "state", "locked", "point",
          "instance", "class", "count", "reference", "ref_point", "strength", "sample", "unknown_field"]
STATE_FIELDS = ["label", "inst", "L", "noise", "z"]
ACTIONS = ["example", "upload", "random", "edit", "redraw_instance", "redraw_class", "redraw_all", "variations",
           "copy_style", "reference"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([10**200, -(10**200)])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.sampled_from(["scene 0", "AAAA"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.sampled_from(ACTIONS), field=st.sampled_from(FIELDS + [f"state.{f}" for f in STATE_FIELDS]),
       value=JSON_VALUES)
def test_any_malformed_field_is_a_user_error_never_a_crash(studio, state, action, field, value):
    """Each action's request with one field replaced by any JSON value: the studio answers or
    raises StudioError (the server's 400), never another exception (the server's 500)."""
    req = {"action": action, "seed": 2, "state": dict(state), "instance": 1, "class": 1, "count": 2,
           "point": [10.5, 20.5], "name": "scene 1"}
    if field.startswith("state."):
        req["state"][field[6:]] = value
    else:
        req[field] = value
    try:
        studio.act(json.loads(json.dumps(req)))  # what the server's json.loads hands over
    except StudioError as err:
        assert str(err) and "\n" not in str(err)


def _raw_post(url, body: bytes):
    return post(url + "api/act", None, raw=body)


def _png_header(width: int, height: int) -> str:
    """A PNG whose header says ``width``×``height`` (a one-row file: decoding it would fail)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the IHDR chunk's CRC
    return base64.b64encode(bytes(data)).decode()


SMALL = {"image_png": png_b64(np.zeros((16, 16, 3), np.uint8)), "inst_png": png_b64(np.zeros((16, 16), np.uint8))}
LARGE = {"image_png": _png_header(5000, 5000), "inst_png": png_b64(np.zeros((16, 16), np.uint8))}
BOMB = {"image_png": _png_header(65535, 65535), "inst_png": png_b64(np.zeros((16, 16), np.uint8))}
MALFORMED = {
    "nested JSON": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "nested object": (b'{"state": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001, "not valid JSON"),
    "5000-digit seed": (b'{"action": "redraw_all", "seed": ' + b"7" * 5000 + b"}", "not valid JSON"),
    "NaN point": (b'{"action": "redraw_instance", "point": [NaN, 3]}', "point.0: must be a finite number"),
    "Infinity strength": (b'{"action": "copy_style", "strength": Infinity}', "strength: must be a finite number"),
    "list as example name": (b'{"action": "example", "name": ["scene 0"]}', "name: must be a valid string"),
    "string as seed": (b'{"action": "random", "seed": "7"}', "seed: must be a valid integer"),
    "bool as instance": (b'{"action": "redraw_instance", "instance": true}', "instance: must be a valid integer"),
    "unknown field": (b'{"action": "random", "sed": 7}', "sed: unknown field"),
    "list as client": (b'{"action": "random", "client": ["a"]}', "client: must be the session id"),
    "dict as action": (b'{"action": {"a": 1}}', "action: must be a valid string"),
    "reference too small": (json.dumps({"action": "reference", "reference": SMALL}).encode(), "at least 32×16"),
    "reference too large": (json.dumps({"action": "reference", "reference": LARGE}).encode(), "larger than 1024"),
    "reference 65535 a side": (json.dumps({"action": "reference", "reference": BOMB}).encode(), "far too large"),
    "not an object": (b"[1, 2]", "must be a JSON object"),
    "bad UTF-8": (b'{"action": "\xff"}', "not valid JSON"),
}


@pytest.fixture(scope="module")
def url(studio):
    with serving(studio) as u:
        yield u


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_400_naming_the_field(url, case):
    body, words = MALFORMED[case]
    status, out = _raw_post(url, body)
    assert status == 400 and words in out["error"] and "\n" not in out["error"], (status, out)


# ---------------------------------------------------------------------------
# Start-up: every reason it cannot start is one line and exit code 2
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-start")
    write_checkpoint(folder / "tiny.pt")
    data = bytearray((folder / "tiny.pt").read_bytes())
    (folder / "truncated.pt").write_bytes(bytes(data[: len(data) // 2]))
    (folder / "garbage.pt").write_bytes(b"not a checkpoint at all")
    return folder


def _start(argv) -> subprocess.CompletedProcess:
    """``inade.studio``'s ``main`` in this process as the command runs it (``run_command``)."""
    import contextlib

    from inade.studio.__main__ import main
    from inade.utils.errors import run_command

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = run_command(main, argv)
    return subprocess.CompletedProcess(argv, rc, "", err.getvalue())


STARTS = {
    "port 70000": (["--port", "70000"], ["--port 70000", "0 … 65535"]),
    "port not a number": (["--port", "eighty"], ["--port", "eighty"]),
    "unknown option": (["--prot", "8000"], ["--prot"]),
    "missing checkpoint": (["--checkpoint", "{d}/missing.pt"], ["missing.pt"]),
    "truncated checkpoint": (["--checkpoint", "{d}/truncated.pt"], ["truncated.pt"]),
    "garbage checkpoint": (["--checkpoint", "{d}/garbage.pt"], ["garbage.pt"]),
    "device banana": (["--checkpoint", "{d}/tiny.pt", "--device", "banana"], ["--device banana"]),
    "host banana": (["--checkpoint", "{d}/tiny.pt", "--host", "banana", "--port", "0"], ["--host banana"]),
    "host not this machine": (["--checkpoint", "{d}/tiny.pt", "--host", "10.9.9.9", "--port", "0"], ["10.9.9.9"]),
    "bad --set": (["--checkpoint", "{d}/tiny.pt", "--set", "ngf"], ["ngf"]),
}


@pytest.mark.parametrize("case", list(STARTS))
def test_start_up_errors_are_one_line(checkpoints, case):
    argv, needles = STARTS[case]
    assert_user_error(_start([a.format(d=checkpoints) for a in argv]), *needles)


def test_a_port_in_use_is_one_line_from_the_command(checkpoints):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_cli(["-m", "inade.studio", "--checkpoint", str(checkpoints / "tiny.pt"), "--port", str(port)],
                       timeout=120)
    assert_user_error(proc, f"--port {port}", "in use")
