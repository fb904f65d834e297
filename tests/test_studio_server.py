"""INADE Studio's server, without a browser: actions, error messages, limits, paths, queueing.

A real server (uvicorn, in a thread, on a free port) serves a tiny random model
(:mod:`tests._studio`); requests go over HTTP as the page sends them.
"""
from __future__ import annotations

import base64
import http.client
import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from _studio import decode_map, encode_map, get, image_of, png_b64, post, tiny_models, tiny_studio, write_checkpoint  # noqa: E402
from test_synthesis import KnownEncoder  # noqa: E402 - μ_γ row l = l + 0.1·c, μ_β = μ_γ + 10

from inade.data import CLASS_NAMES  # noqa: E402
from inade.studio import Studio  # noqa: E402
from inade.studio.server import MAX_BODY, serving  # noqa: E402


@pytest.fixture(scope="module")
def url():
    with serving(tiny_studio()) as u:
        yield u


def act(url, **body):
    return post(url + "api/act", body)


def ok(url, **body) -> dict:
    status, out = act(url, **body)
    assert status == 200, out
    return out


@pytest.fixture(scope="module")
def first(url):
    return ok(url, action="example", name="scene 0", seed=3)


def rows(state, noise_nc=4) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(state["noise"]), "<f4").reshape(state["L"], 2, noise_nc).copy())


def changed_rows(a, b) -> list[int]:
    return (rows(a) != rows(b)).flatten(1).any(1).nonzero().flatten().tolist()


# ---------------------------------------------------------------------------
# Page and actions
# ---------------------------------------------------------------------------


def test_page_info_and_static_files(url):
    status, html = get(url)
    assert status == 200 and b'id="label-canvas"' in html and b"/static/app.js" in html
    assert get(url + "static/app.js")[0] == 200 and get(url + "static/app.css")[0] == 200
    status, body = get(url + "api/info")
    import json

    info = json.loads(body)
    assert info["classes"] == list(CLASS_NAMES) and len(info["colors"]) == len(CLASS_NAMES)
    assert (info["width"], info["height"]) == (64, 64) and info["encoder"] is True
    assert info["examples"][:2] == ["scene 0", "scene 1"] and info["max_body"] == MAX_BODY


def test_redraw_instance_changes_only_its_row_and_mostly_its_pixels(url, first):
    state = first["state"]
    inst = decode_map(state["inst"])
    target = int(inst[40, 30])
    ys, xs = np.nonzero(inst == target)
    out = ok(url, action="redraw_instance", point=[int(xs[0]) + 0.5, int(ys[0]) + 0.5], seed=11, state=state)
    assert out["instance"] == target and changed_rows(out["state"], state) == [target]
    assert out["state"]["z"] == state["z"] and out["state"]["inst"] == state["inst"]
    diff = np.abs(image_of(out["image"]) - image_of(first["image"])).sum(2)
    assert diff[inst == target].mean() > 3 * diff[inst != target].mean()
    again = ok(url, action="redraw_instance", instance=target, seed=11, state=state)
    assert again["state"]["noise"] == out["state"]["noise"] and again["image"] == out["image"]


def test_edit_makes_ids_compact_and_keeps_every_surviving_style(url, first):
    state = first["state"]
    label, inst = decode_map(state["label"]), decode_map(state["inst"])
    L = state["L"]
    gone = int(inst[0, 0])  # the sky: painted over entirely with the ground's instance
    ground_id = int(inst[63, 0])
    label2, inst2 = label.copy(), inst.copy()
    sky = inst == gone
    label2[sky], inst2[sky] = label[63, 0], ground_id
    square = np.zeros((64, 64), bool)
    square[2:9, 2:9] = True
    label2[square], inst2[square] = 3, 500  # a new disc with a raw id far past L
    out = ok(url, action="edit", seed=5, state=dict(state, label=encode_map(label2), inst=encode_map(inst2)))
    new_inst = decode_map(out["state"]["inst"])
    L2 = out["state"]["L"]
    assert sorted(np.unique(new_inst).tolist()) == list(range(L2)) and L2 == L  # one gone, one new
    id_map = out["id_map"]
    assert id_map[gone] == -1 and sorted(i for i in id_map if i >= 0) == [i for i in range(L2) if i != new_inst[5, 5]]
    old_rows, new_rows = rows(state), rows(out["state"])
    for old, new in enumerate(id_map):
        if new >= 0:
            assert torch.equal(new_rows[new], old_rows[old]), f"instance {old} -> {new} lost its style"
            assert np.array_equal(new_inst == new, (inst2 == old) & ~square)
    assert out["state"]["z"] == state["z"]
    assert out["classes"][int(new_inst[5, 5])] == 3


def test_a_class_brush_across_an_instance_keeps_it_one_instance_with_its_style(url, first):
    """A label edit that leaves an id over two classes (as COCO-Stuff maps hold): one instance, as in
    training and the public code — same id and noise row, the strip drawn with its new class."""
    state = first["state"]
    label, inst = decode_map(state["label"]), decode_map(state["inst"])
    ground = int(inst[63, 0])
    label2 = label.copy()
    part = (inst == ground) & (np.arange(64) < 6)[None, :]  # a thin strip of the ground becomes road (class 2)
    label2[part] = 2
    out = ok(url, action="edit", seed=5, state=dict(state, label=encode_map(label2)))
    new_inst = decode_map(out["state"]["inst"])
    assert out["state"]["L"] == state["L"] and out["id_map"] == list(range(state["L"]))
    assert np.array_equal(new_inst, inst) and torch.equal(rows(out["state"]), rows(state))
    assert out["classes"][ground] == first["classes"][ground], "named by its largest class"
    assert out["image"] != first["image"]
    redrawn = ok(url, action="redraw_class", **{"class": 2}, seed=4321, state=out["state"])
    assert ground in changed_rows(redrawn["state"], out["state"]), "a class re-draw takes the whole id"


def test_locks_hold_through_class_and_full_redraws(url, first):
    state = first["state"]
    classes = first["classes"]
    cls = max(set(classes), key=classes.count)
    ids = [i for i, c in enumerate(classes) if c == cls]
    locked = ids[:1]
    out = ok(url, action="redraw_class", **{"class": cls}, seed=8, locked=locked, state=state)
    assert changed_rows(out["state"], state) == ids[1:]
    allout = ok(url, action="redraw_all", seed=9, locked=locked, state=state)
    assert locked[0] not in changed_rows(allout["state"], state) and allout["state"]["z"] == state["z"]
    fresh = ok(url, action="redraw_all", seed=9, state=state)
    assert fresh["state"]["z"] != state["z"] and len(changed_rows(fresh["state"], state)) == state["L"]
    status, err = act(url, action="redraw_instance", instance=locked[0], seed=1, locked=locked, state=state)
    assert status == 400 and "locked" in err["error"]


def test_variations_match_single_redraws(url, first):
    state = first["state"]
    out = ok(url, action="variations", instance=2, count=3, seed=20, state=state)
    assert len(out["variations"]) == 3
    for k, v in enumerate(out["variations"]):
        assert changed_rows(v["state"], state) == [2] and v["state"]["z"] == state["z"]
        single = ok(url, action="redraw_instance", instance=2, seed=20 + k, state=state)
        assert torch.allclose(rows(v["state"]), rows(single["state"]))
    assert len({v["image"] for v in out["variations"]}) == 3


def test_reference_style_takes_scale_from_gamma_and_bias_from_beta_statistics():
    G, _, cfg = tiny_models()
    studio = Studio(G, KnownEncoder(cfg.noise_nc), cfg)
    state = studio.act({"action": "example", "name": "scene 1", "seed": 2})["state"]
    ref_inst = np.zeros((64, 64), np.uint8)
    ref_inst[:, 32:] = 1  # reference instance 1 is the right half
    ref = {"image_png": png_b64(np.full((64, 64, 3), 128, np.uint8)), "inst_png": png_b64(ref_inst)}
    mu = torch.arange(cfg.noise_nc) * 0.1 + 1  # μ_γ of reference instance 1
    before = rows(state)
    full = studio.act({"action": "copy_style", "reference": ref, "ref_point": [40, 10], "instance": 3,
                       "strength": 1.0, "state": state})
    after = rows(full["state"])
    assert torch.allclose(after[3, 0], mu) and torch.allclose(after[3, 1], mu + 10)  # γ ← γ stats, β ← β stats
    assert changed_rows(full["state"], state) == [3]
    half = rows(studio.act({"action": "copy_style", "reference": ref, "ref_point": [40, 10], "instance": 3,
                            "strength": 0.5, "state": state})["state"])
    assert torch.allclose(half[3, 0], 0.5 * mu + 0.5 * before[3, 0], atol=1e-6)
    assert torch.allclose(half[3, 1], 0.5 * (mu + 10) + 0.5 * before[3, 1], atol=1e-6)
    zero = rows(studio.act({"action": "copy_style", "reference": ref, "ref_point": [40, 10], "instance": 3,
                            "strength": 0.0, "state": state})["state"])
    assert torch.equal(zero, before)


def test_export_remakes_the_picture_from_the_command_line(url, first, tmp_path):
    status, data = post(url + "api/export", {"action": "export", "state": first["state"]})
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["README.txt", "image.png", "instance.png", "label.png", "latents.pt"]
        zf.extractall(tmp_path)
    from PIL import Image

    exported = np.asarray(Image.open(tmp_path / "image.png")).astype(np.int64)
    assert np.array_equal(exported, image_of(first["image"]))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "instance.png")), decode_map(first["state"]["inst"]))
    latents = torch.load(tmp_path / "latents.pt", weights_only=True)
    assert torch.equal(latents["noise"][0], rows(first["state"])) and latents["instance_ids"].tolist() == list(range(first["state"]["L"]))
    write_checkpoint(tmp_path / "tiny.pt")
    from inade.cli import main

    args = ["--checkpoint", str(tmp_path / "tiny.pt"), "--label", str(tmp_path / "label.png"),
            "--inst", str(tmp_path / "instance.png"), "--latents", str(tmp_path / "latents.pt")]
    assert main(["render", *args, "--out", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")).astype(np.int64), exported)
    assert main(["resample", *args, "--instances", "1", "--seed", "4", "--out", str(tmp_path / "other.png")]) == 0


# ---------------------------------------------------------------------------
# Bad input: a message, and the server keeps serving
# ---------------------------------------------------------------------------

GOOD = np.zeros((64, 64), np.uint8)
GOOD[32:] = 1


def _corrupt_png() -> str:
    raw = base64.b64decode(png_b64(GOOD))
    return base64.b64encode(raw[:40] + b"\x00" * 30 + raw[70:]).decode()


BAD_UPLOADS = {
    "not a png": ({"label_png": base64.b64encode(b"GIF89a not a png at all").decode()}, "not a PNG"),
    "corrupt png": ({"label_png": _corrupt_png()}, "cannot read"),
    "truncated png": ({"label_png": base64.b64encode(base64.b64decode(png_b64(GOOD))[:60]).decode()}, "cannot read"),
    "wrong size": ({"label_png": png_b64(np.zeros((32, 48), np.uint8))}, "48×32 but this model makes 64×64"),
    "class outside palette": ({"label_png": png_b64(np.where(GOOD > 0, 9, 0).astype(np.uint8))}, "outside the palette"),
    "instance map of another size": ({"label_png": png_b64(GOOD), "inst_png": png_b64(np.zeros((64, 32), np.uint8))},
                                     "instance map: the map is 32×64"),
    "not base64": ({"label_png": "%%% not base64 %%%"}, "not valid base64"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_message(url, case):
    body, words = BAD_UPLOADS[case]
    status, out = act(url, action="upload", seed=1, **body)
    assert status == 400 and words in out["error"], out
    assert get(url + "api/info")[0] == 200


def test_a_good_upload_works(url):
    out = ok(url, action="upload", seed=1, label_png=png_b64(GOOD), inst_png=png_b64((GOOD * 7).astype(np.uint8)))
    assert out["state"]["L"] == 2 and decode_map(out["state"]["inst"]).max() == 1


@pytest.mark.parametrize("point", [[-1, 10], [64, 3], [5, 70], [10.5, -0.5]])
def test_a_click_outside_any_instance_gets_a_message(url, first, point):
    status, out = act(url, action="redraw_instance", point=point, seed=1, state=first["state"])
    assert status == 400 and "outside the map" in out["error"]


def test_malformed_requests_get_a_message(url, first):
    state = first["state"]
    cases = [
        (post(url + "api/act", None, raw=b"{not json"), "not valid JSON"),
        (act(url, action="fly"), "unknown action 'fly'"),
        (act(url, action="redraw_all", seed=1), "load a layout first"),
        (act(url, action="redraw_all", seed=1, state=dict(state, label=state["label"][:-8])), "bytes, expected 8192"),
        (act(url, action="redraw_all", seed=1, state=dict(state, L=state["L"] + 1)), "noise:"),
        (act(url, action="redraw_all", seed=-4, state=state), "seed: must be greater than or equal to 0"),
        (act(url, action="variations", instance=1, count=99, seed=1, state=state), "count: must be less than"),
        (act(url, action="redraw_class", **{"class": 5}, seed=1, state=state) if 5 not in first["classes"]
         else act(url, action="redraw_class", **{"class": 77}, seed=1, state=state), "class"),
        (act(url, action="copy_style", instance=1, seed=1, state=state), "reference"),
    ]
    for (status, out), words in cases:
        assert status == 400 and words in out["error"], (words, out)
    label = decode_map(state["label"])
    label[0, 0] = 40
    status, out = act(url, action="edit", seed=1, state=dict(state, label=encode_map(label)))
    assert status == 400 and "class ids 40 are outside the palette" in out["error"]


def test_an_oversized_upload_is_refused_before_it_is_read(url):
    status, out = post(url + "api/act", None, raw=b'{"action": "upload", "label_png": "' + b"A" * (MAX_BODY + 10) + b'"}')
    assert status == 413 and "too large" in out["error"]
    assert get(url + "api/info")[0] == 200


def test_only_json_posts_and_local_host_names_are_served(url):
    status, out = post(url + "api/act", None, raw=b"action=random", content_type="text/plain")
    assert status == 415 and "application/json" in out["error"]
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/api/info", headers={"Host": "attacker.example"})  # a DNS-rebound name
    r = conn.getresponse()
    assert r.status == 400 and b"classes" not in r.read()
    conn.close()
    assert get(url.replace("127.0.0.1", "localhost") + "api/info")[0] == 200


TRAVERSALS = [
    "/static/../engine.py", "/static/%2e%2e/engine.py", "/static/..%2fengine.py", "/static/%2e%2e%2f%2e%2e%2fcli.py",
    "/static/..%5cengine.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/....//engine.py",
    "/../../setup.py", "/static/../../../../../../etc/passwd", "/static/%252e%252e/engine.py", "/static/.",
    "/static/", "/api/../static/../engine.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_file_outside_the_page_can_be_read(url, path):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)  # sent as written, not normalised
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status in (400, 404, 405) and b"StudioError" not in body and b"root:" not in body, (r.status, body[:200])


# ---------------------------------------------------------------------------
# Requests during a generation: queued, superseded, never a crash
# ---------------------------------------------------------------------------


class SlowStudio(Studio):
    def _act_sleep(self, req):
        time.sleep(req.get("seed", 1000) / 1000)  # milliseconds
        return {"note": "slept"}

    def _act_boom(self, req):
        raise RuntimeError("a bug")


def test_requests_wait_their_turn_and_stale_repaints_are_superseded():
    with serving(SlowStudio(*tiny_models())) as u:
        state = ok(u, action="example", name="scene 0", seed=1)["state"]
        page = post(u + "api/session", {})[1]["client"]
        results = {}

        def call(name, **body):
            results[name] = act(u, **body)

        threads = [threading.Thread(target=call, args=("sleep",), kwargs=dict(action="sleep", seed=1500))]
        for seq in range(1, 5):
            threads.append(threading.Thread(target=call, args=(seq,), kwargs=dict(
                action="edit", client=page, supersedable=True, seed=seq, state=state)))
        threads.append(threading.Thread(target=call, args=("other",), kwargs=dict(
            action="redraw_all", client=page, seed=3, state=state)))  # not supersedable: runs in turn
        for t in threads:
            t.start()
            time.sleep(0.1)
        for t in threads:
            t.join(30)
        assert results["sleep"][0] == 200
        assert [results[s][0] for s in range(1, 5)] == [409, 409, 409, 200]
        assert all(results[s][1] == {"superseded": True} for s in range(1, 4))
        assert results["other"][0] == 200 and "state" in results["other"][1]
        status, out = act(u, action="boom")
        assert status == 500 and "RuntimeError: a bug" in out["error"]
        assert ok(u, action="redraw_all", seed=4, state=state)["state"]["L"] == state["L"]


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def _studio_cmd(*args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "inade.studio", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_command_prints_its_local_address_and_serves(tmp_path):
    write_checkpoint(tmp_path / "tiny.pt")
    proc = _studio_cmd("--checkpoint", str(tmp_path / "tiny.pt"), "--port", "0", cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert "at http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        address = line.rsplit(" ", 1)[1].strip()
        status, body = get(address + "api/info")
        assert status == 200 and b'"preset":"synthetic"' in body
    finally:
        proc.terminate()
        proc.wait(20)


def test_the_command_without_a_checkpoint_says_to_train_first(tmp_path):
    proc = _studio_cmd(cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.startswith("error: ") and "make train" in err and "Traceback" not in err
    proc = _studio_cmd("--checkpoint", str(tmp_path / "missing.pt"), cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "missing.pt" in err and "Traceback" not in err



def test_a_public_generator_file_opens_with_its_config(tmp_path):
    from inade.studio.__main__ import StartError, _load, build_parser

    G, E, _ = tiny_models()
    torch.save(G.state_dict(), tmp_path / "latest_net_G.pth")
    torch.save(E.state_dict(), tmp_path / "latest_net_E.pth")
    sets = ["--set", "ngf=4", "--set", "noise_nc=4", "--set", "z_dim=8"]
    args = build_parser().parse_args(["--checkpoint", str(tmp_path / "latest_net_G.pth"), "--config", "synthetic",
                                      "--encoder", str(tmp_path / "latest_net_E.pth"), *sets])
    studio = _load(args)
    assert studio.info()["encoder"] and studio.info()["classes"] == list(CLASS_NAMES)
    with pytest.raises(StartError, match="--config"):
        _load(build_parser().parse_args(["--checkpoint", str(tmp_path / "latest_net_G.pth")]))


@pytest.mark.parametrize("preset", ["synthetic", "cityscapes", "ade20k", "celeba", "deepfashion", "cocostuff"])
def test_every_preset_has_named_classes_and_valid_example_layouts(preset):
    import inade
    from inade.studio.presets import class_colors, class_names, examples

    cfg = inade.config(preset)
    names = class_names(cfg)
    assert len(names) == len(class_colors(cfg)) == cfg.num_classes and len(set(class_colors(cfg))) == cfg.num_classes
    assert (names[-1] == "don't care") == cfg.contain_dontcare_label
    layouts = examples(cfg)
    assert layouts
    for label, inst in layouts.values():
        assert label.shape == inst.shape == cfg.output_size and label.max() < cfg.num_classes
        L = int(inst.max()) + 1
        assert np.unique(inst).tolist() == list(range(L)) and L >= 3
        classes = np.zeros(L, np.int64)
        classes[inst.ravel()] = label.ravel()
        assert np.array_equal(classes[inst], label)  # one class per instance
