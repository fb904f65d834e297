"""INADE Studio end to end in a real headless Chromium, driven by Playwright.

Load an example layout, paint a stroke (the picture changes), click an instance
in the picture (its pixels change, pixels 8 or more away do not), undo twice (the
picture and the maps come back), export (the zip's image is the one on screen),
and get visible messages for a non-PNG upload, an oversized one and a click outside
any instance; then every tool, a lock, variations, a reference style and the
history; and strokes painted while a picture is being drawn. Screenshots go to ``$INADE_TEST_ARTIFACTS/studio`` (default a temporary folder);
the test prints the folder.

Needs Chromium (``apt-get install chromium``; or ``INADE_CHROMIUM=/path``) and the
``playwright`` package. Without them the test is skipped, unless
``INADE_REQUIRE_BROWSER=1`` (set by ``.ci/run``): then it fails.
"""
from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _studio import image_of, tiny_studio

REQUIRED = os.environ.get("INADE_REQUIRE_BROWSER") == "1"
ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _missing(what: str):
    if REQUIRED:
        pytest.fail(f"{what} (INADE_REQUIRE_BROWSER=1: the browser test must run)")
    pytest.skip(f"{what}; set INADE_REQUIRE_BROWSER=1 to make this a failure")


def _chromium() -> str:
    path = os.environ.get("INADE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not path or not os.access(path, os.X_OK):
        _missing(f"no Chromium found{f' at {path}' if path else ''} (apt-get install chromium, "
                 "or INADE_CHROMIUM=/path/to/chrome)")
    return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")
    pytest.importorskip("starlette")
    exe = _chromium()
    with sync_playwright() as p:  # Playwright gives the browser a new empty profile folder
        b = p.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    # screenshots: $INADE_TEST_ARTIFACTS/studio when set (CI keeps them), else a temporary folder
    given = os.environ.get("INADE_TEST_ARTIFACTS")
    folder = Path(given) / "studio" if given else tmp_path_factory.mktemp("studio-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _idle(page):
    page.wait_for_function("window.studio && window.studio.latents && window.studio.idle()", timeout=30_000)


def _picture(page) -> np.ndarray:
    return image_of(page.get_attribute("#synth", "src"))


def _maps(page):
    label, inst = page.evaluate("[Array.from(studio.label), Array.from(studio.inst)]")
    return np.array(label).reshape(64, 64), np.array(inst).reshape(64, 64)


def _page_point(page, selector: str, x: float, y: float, pad: float = 0) -> tuple[float, float]:
    """Page coordinates of map pixel centre (x, y) on the element (its content box inset by ``pad``)."""
    page.locator(selector).scroll_into_view_if_needed()
    box = page.locator(selector).bounding_box()
    w, h = box["width"] - 2 * pad, box["height"] - 2 * pad
    return box["x"] + pad + (x + 0.5) * w / 64, box["y"] + pad + (y + 0.5) * h / 64


def _near(mask: np.ndarray, r: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``r`` of ``mask``."""
    padded = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def test_paint_click_undo_export_in_chromium(browser, artifacts, capsys):
    with capsys.disabled():
        print(f"\nstudio browser test: screenshots in {artifacts}")
    from inade.studio.server import serving

    errors = []
    with serving(tiny_studio()) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        _idle(page)
        page.select_option("#example", "scene 1")
        page.click("#load-example")
        page.wait_for_function("document.querySelector('#message').textContent.includes('scene 1')")
        _idle(page)
        page.screenshot(path=str(artifacts / "1-example.png"))
        before = _picture(page)
        label0, inst0 = _maps(page)

        # A box-class stroke across the upper left: maps and picture change.
        page.click("#palette button[data-class='4']")
        page.click("[data-tool='brush']")
        page.fill("#size", "6")
        page.mouse.move(*_page_point(page, "#label-canvas", 6, 10))
        page.mouse.down()
        for x in range(8, 30, 3):
            page.mouse.move(*_page_point(page, "#label-canvas", x, 12))
        page.mouse.up()
        _idle(page)
        stroked = _picture(page)
        label1, inst1 = _maps(page)
        assert (label1[10:15, 8:28] == 4).all() and (label1 != label0).sum() > 60
        assert not np.array_equal(stroked, before)
        assert np.unique(inst1).tolist() == list(range(int(inst1.max()) + 1))  # ids compact again
        page.screenshot(path=str(artifacts / "2-stroke.png"))

        # Click an instance in the picture far from the stroke: it changes, pixels 8+ px away do not.
        sizes = np.bincount(inst1.ravel())
        far_from_stroke = ~_near(label1 != label0, 8)
        target = max(range(len(sizes)), key=lambda i: ((inst1 == i) & far_from_stroke).sum())
        ys, xs = np.nonzero((inst1 == target) & far_from_stroke)
        k = len(ys) // 2
        page.mouse.click(*_page_point(page, "#synth", xs[k], ys[k], pad=12))
        _idle(page)
        clicked = _picture(page)
        assert page.evaluate("studio.selected") == target, page.text_content("#message")
        diff = np.abs(clicked - stroked).max(2)
        inside = inst1 == target
        assert diff[inside].mean() > 10
        assert diff[~_near(inside, 8)].max() <= 2
        assert np.array_equal(_maps(page)[1], inst1)
        page.screenshot(path=str(artifacts / "3-click.png"))

        # Undo twice: the picture and the maps come back.
        page.click("#undo")
        assert np.array_equal(_picture(page), stroked)
        page.click("#undo")
        _idle(page)
        assert np.array_equal(_picture(page), before)
        label_u, inst_u = _maps(page)
        assert np.array_equal(label_u, label0) and np.array_equal(inst_u, inst0)
        page.click("#redo")
        page.click("#redo")
        assert np.array_equal(_picture(page), clicked)

        # Export: the zip holds the picture on screen, its maps and latents.
        with page.expect_download() as download:
            page.click("#export")
        path = artifacts / "inade-studio.zip"
        download.value.save_as(str(path))
        with zipfile.ZipFile(path) as zf:
            assert {"image.png", "label.png", "instance.png", "latents.pt"} <= set(zf.namelist())
            from PIL import Image

            exported = np.asarray(Image.open(io.BytesIO(zf.read("image.png")))).astype(np.int64)
            exported_inst = np.asarray(Image.open(io.BytesIO(zf.read("instance.png"))))
        assert np.array_equal(exported, clicked) and np.array_equal(exported_inst, inst1)
        page.screenshot(path=str(artifacts / "4-export.png"))

        # Bad input: visible messages, and the page keeps working.
        bad = artifacts / "not-a-png.png"
        bad.write_bytes(b"this is not a PNG")
        page.set_input_files("#upload-label", str(bad))
        page.click("#upload")
        page.wait_for_function("document.querySelector('#message').className === 'error'")
        assert "not a PNG" in page.text_content("#message") and page.is_visible("#message")
        page.screenshot(path=str(artifacts / "5-bad-upload.png"))
        big = artifacts / "too-large.png"
        big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(13 * 2**20))
        page.set_input_files("#upload-label", str(big))
        page.click("#upload")
        page.wait_for_function("document.querySelector('#message').textContent.includes('too large')")
        big.unlink()
        box = page.locator("#synth").bounding_box()
        page.mouse.click(box["x"] + 4, box["y"] + 4)  # the frame around the picture: no instance there
        page.wait_for_function("document.querySelector('#message').textContent.includes('outside the map')")
        assert page.get_attribute("#message", "class") == "error"
        page.screenshot(path=str(artifacts / "6-click-outside.png"))
        page.click("#redraw-all")
        page.wait_for_function("document.querySelector('#message').textContent.startsWith('re-drew all')")
        assert not np.array_equal(_picture(page), clicked)
        assert not errors, errors
        page.close()


def _noise_rows(page) -> np.ndarray:
    import base64

    st = page.evaluate("studio.latents")
    return np.frombuffer(base64.b64decode(st["noise"]), "<f4").reshape(st["L"], -1)


def _drag(page, points):
    page.mouse.move(*_page_point(page, "#label-canvas", *points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*_page_point(page, "#label-canvas", *p))
    page.mouse.up()
    _idle(page)


def test_tools_lock_variations_reference_and_history_in_chromium(browser, artifacts, tmp_path):
    from PIL import Image

    from inade.studio.server import serving

    errors = []
    with serving(tiny_studio()) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        _idle(page)
        first = _picture(page)
        label, inst = _maps(page)
        L0 = int(inst.max()) + 1

        # New instance tool: two discs in the sky, each a new instance of class 3.
        page.click("#palette button[data-class='3']")
        page.click("[data-tool='instance']")
        page.fill("#size", "5")
        _drag(page, [(5, 3), (9, 3)])
        _drag(page, [(40, 3), (44, 3)])
        label, inst = _maps(page)
        assert int(inst.max()) + 1 == L0 + 2 and label[3, 7] == 3 and label[3, 42] == 3 and inst[3, 7] != inst[3, 42]
        # Merge: select the first disc, merge the second into it.
        page.click("[data-tool='pick']")
        page.mouse.click(*_page_point(page, "#label-canvas", 7, 3))
        page.click("[data-tool='merge']")
        page.mouse.click(*_page_point(page, "#label-canvas", 42, 3))
        _idle(page)
        label, inst = _maps(page)
        assert int(inst.max()) + 1 == L0 + 1 and inst[3, 7] == inst[3, 42]
        # Line and fill.
        page.click("#palette button[data-class='2']")
        page.click("[data-tool='line']")
        _drag(page, [(2, 60), (30, 60)])
        assert (_maps(page)[0][60, 4:28] == 2).all()
        page.click("#palette button[data-class='5']")
        page.click("[data-tool='fill']")
        sky = _maps(page)[0] == label[20, 60]
        page.mouse.click(*_page_point(page, "#label-canvas", 60, 20))
        _idle(page)
        assert (_maps(page)[0][sky] == 5).mean() > 0.9
        # Eraser paints class 0.
        page.click("[data-tool='eraser']")
        _drag(page, [(7, 3), (8, 3)])
        assert _maps(page)[0][3, 7] == 0
        page.screenshot(path=str(artifacts / "7-tools.png"))

        # Lock one instance: "re-draw all" keeps its noise row.
        target = int(_maps(page)[1][40, 30])
        page.click("#instances li[data-instance='%d']" % target)
        page.click("#lock")
        before = _noise_rows(page)
        page.click("#redraw-all")
        page.wait_for_function("document.querySelector('#message').textContent.includes('locked kept')")
        _idle(page)
        after = _noise_rows(page)
        assert np.array_equal(after[target], before[target]) and (after != before).any(1).sum() == len(after) - 1
        page.click("#lock")  # unlock

        # Variations: four thumbnails; taking one puts it on screen.
        page.fill("#var-count", "4")
        page.click("#variations")
        page.wait_for_function("document.querySelectorAll('#variation-grid img').length === 4")
        third = page.get_attribute("#variation-grid img[data-index='2']", "src")
        page.click("#variation-grid img[data-index='2']")
        assert page.get_attribute("#synth", "src") == third
        page.screenshot(path=str(artifacts / "8-variations.png"))

        # Reference style through the encoder, at half strength.
        ref_inst = np.zeros((64, 64), np.uint8)
        ref_inst[:, 32:] = 1
        ref_img = np.zeros((64, 64, 3), np.uint8)
        ref_img[:, 32:] = (200, 40, 40)
        Image.fromarray(ref_img).save(tmp_path / "ref.png")
        Image.fromarray(ref_inst).save(tmp_path / "ref_inst.png")
        page.set_input_files("#ref-image-file", str(tmp_path / "ref.png"))
        page.set_input_files("#ref-inst-file", str(tmp_path / "ref_inst.png"))
        page.click("#ref-load")
        page.wait_for_function("document.querySelector('#message').textContent.includes('2 instances')")
        box = page.locator("#ref-view").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
        page.fill("#strength", "0.5")
        rows = _noise_rows(page)
        page.click("#apply-style")
        page.wait_for_function("document.querySelector('#message').textContent.includes('strength 0.5')")
        _idle(page)
        sel = page.evaluate("studio.selected")
        changed = np.nonzero((_noise_rows(page) != rows).any(1))[0].tolist()
        assert page.text_content("#message").startswith("style of reference instance 1") and changed == [sel]
        page.screenshot(path=str(artifacts / "9-reference.png"))

        # History: the first entry brings the first picture back.
        page.click("#history li:first-child")
        assert np.array_equal(_picture(page), first)
        assert not errors, errors
        page.close()


def test_strokes_made_while_the_picture_is_drawn_are_kept(browser):
    from inade.studio import Studio
    from inade.studio.server import serving

    from _studio import tiny_models

    class SlowEdits(Studio):
        edits = 0

        def _act_edit(self, req):
            import time

            self.edits += 1
            time.sleep(1.5)
            return super()._act_edit(req)

    studio = SlowEdits(*tiny_models())
    with serving(studio) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        _idle(page)
        L0 = page.evaluate("studio.latents.L")
        page.click("#palette button[data-class='3']")
        page.click("[data-tool='instance']")
        for x in (5, 25, 45):  # three new discs; the second and third while the first edit runs
            page.mouse.move(*_page_point(page, "#label-canvas", x, 4))
            page.mouse.down()
            page.mouse.move(*_page_point(page, "#label-canvas", x + 3, 4))
            page.mouse.up()
            assert x == 5 or page.evaluate("studio.busy")
        _idle(page)
        label, inst = _maps(page)
        assert page.evaluate("studio.latents.L") == L0 + 3 == int(inst.max()) + 1
        assert (label[4, [6, 26, 46]] == 3).all() and len({inst[4, 6], inst[4, 26], inst[4, 46]}) == 3
        assert np.unique(inst).tolist() == list(range(L0 + 3))
        # Two edits went out, not three: the strokes made during the first were sent together,
        # and the history has one entry for all three (the example's is the other).
        assert studio.edits == 2 and page.evaluate("studio.history.length") == 2
        page.close()


def test_a_page_whose_session_was_forgotten_takes_a_new_one_and_goes_on(browser):
    """Sessions are issued by the server and bounded; a page whose id was pushed out (or
    a restarted server) gets 410 and carries on with a new id, without an error message."""
    from inade.studio.server import Sessions, serving

    from _studio import post

    sessions = Sessions(cap=2)
    with serving(tiny_studio(), sessions=sessions) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        _idle(page)
        first = page.evaluate("studio.client")
        assert first in sessions
        for _ in range(2):  # another client's sessions push the page's out
            post(url + "api/session", {})
        assert first not in sessions
        before = page.evaluate("studio.history.length")
        page.click("#redraw-all")
        page.wait_for_function(f"studio.history.length === {before + 1} && studio.idle()", timeout=30_000)
        assert page.evaluate("studio.client") not in (None, first)
        assert page.get_attribute("#message", "class") == "ok", page.text_content("#message")
        page.close()
