"""INADE Studio: time from a click on an instance to the new picture on screen, in headless Chromium.

    python -m bench.bench_studio [--clicks 5] [--checkpoint checkpoints/inade_synthetic/latest.pt]
    python -m bench.bench_studio --load [--clients 20] [--requests 20]

Two models: the synthetic preset (64×64; the ``make train`` checkpoint when it
exists, else random weights of the same size) and a full-width CelebAMask-HQ
generator (ngf 64, 256×256, random weights: the time does not depend on them).
For each, the page loads an example layout, then the largest instance is clicked
``--clicks`` times in the picture. "click → image" is measured in the page (from
the click event to the ``load`` event of the new picture: request, model, PNG,
transfer, decode); "server" is the time inside ``Studio.act`` alone. Medians.
Writes ``bench/results/cpu-2core/studio.json`` with the machine's load average.

``--load``: many pages at once, without a browser. ``--clients`` threads each take a
session (``POST /api/session``), load an example and send ``--requests`` variation
requests (4 variations of one instance each) one after another, all against one
server on the synthetic model; every request must be answered 200. Writes the
latencies' median, p95 and maximum under ``"load"`` in the same file (the click
figures stay).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

import inade
from inade.studio import Studio
from inade.studio.server import serving

OUT = Path(__file__).resolve().parent / "results" / "cpu-2core" / "studio.json"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
TIMER = """() => {
  window.__t = [];
  const img = document.querySelector('#synth');
  img.addEventListener('click', () => { window.__t0 = performance.now(); }, true);
  img.addEventListener('load', () => { if (window.__t0) { window.__t.push(performance.now() - window.__t0); window.__t0 = 0; } });
}"""


class TimedStudio(Studio):
    """A Studio that records how long each action takes inside the server."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.times: dict[str, list[float]] = {}

    def act(self, req):
        t = time.perf_counter()
        try:
            return super().act(req)
        finally:
            self.times.setdefault(req.get("action"), []).append(1000 * (time.perf_counter() - t))


def models(name: str, checkpoint: str | None):
    """``(G, cfg, what)`` for ``synthetic`` or ``celeba``."""
    if name == "synthetic" and checkpoint and Path(checkpoint).is_file():
        from inade.cli import load_models

        G, _, cfg = load_models(checkpoint)
        return G, cfg, f"checkpoint {checkpoint}"
    torch.manual_seed(0)
    cfg = inade.config(name)
    return inade.Generator(cfg), cfg, "random weights"


def measure(browser, G, cfg, clicks: int) -> dict:
    studio = TimedStudio(G, None, cfg, title=cfg.name)
    H, W = cfg.output_size
    with serving(studio) as url:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url)
        page.wait_for_function("window.studio && window.studio.latents && window.studio.idle()", timeout=120_000)
        page.evaluate(TIMER)
        inst = np.array(page.evaluate("Array.from(studio.inst)")).reshape(H, W)
        target = int(np.bincount(inst.ravel()).argmax())
        ys, xs = np.nonzero(inst == target)
        k = len(ys) // 2
        page.locator("#synth").scroll_into_view_if_needed()
        box = page.locator("#synth").bounding_box()
        pad = 12
        x = box["x"] + pad + (xs[k] + 0.5) * (box["width"] - 2 * pad) / W
        y = box["y"] + pad + (ys[k] + 0.5) * (box["height"] - 2 * pad) / H
        for n in range(clicks):
            page.mouse.click(x, y)
            page.wait_for_function(f"window.__t.length >= {n + 1} && window.studio.idle()", timeout=120_000)
        browser_ms = page.evaluate("window.__t")
        page.close()
    server_ms = studio.times.get("redraw_instance", [])
    return {
        "size": f"{W}x{H}", "instances": int(inst.max()) + 1, "clicks": clicks,
        "click_to_image_ms": browser_ms, "click_to_image_median_ms": statistics.median(browser_ms),
        "server_ms": server_ms, "server_median_ms": statistics.median(server_ms),
        "params_G": sum(p.numel() for p in G.parameters()),
    }


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        return err.code, json.loads(body) if "json" in err.headers.get("Content-Type", "") else {"error": body}


def load(G, cfg, clients: int, requests: int) -> dict:
    """``clients`` pages sending ``requests`` variation requests each at once; latencies in ms."""
    latencies, statuses, lock = [], [], threading.Lock()
    with serving(Studio(G, None, cfg, title=cfg.name)) as url:
        def page(k: int) -> None:
            status, out = _post(url + "api/session", {})
            client = {"client": out["client"]} if status == 200 else {}  # a server without sessions
            status, out = _post(url + "api/act", {"action": "example", "name": "scene 0", "seed": k, **client})
            state = out["state"]
            for n in range(requests):
                t = time.perf_counter()
                status, _ = _post(url + "api/act", {"action": "variations", "instance": 1, "count": 4,
                                                     "seed": 1000 * k + 4 * n, "state": state, **client})
                with lock:
                    latencies.append(1000 * (time.perf_counter() - t))
                    statuses.append(status)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=page, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=20)
    return {"clients": clients, "requests_per_client": requests, "variations_per_request": 4,
            "answered": len(statuses), "ok": statuses.count(200), "statuses": sorted(set(statuses)),
            "median_ms": statistics.median(latencies), "p95_ms": q[18], "max_ms": max(latencies),
            "wall_s": wall, "requests_per_s": len(statuses) / wall}


def screenshot(browser, G, cfg, path: str, title: str) -> None:
    """The page after an example, a click on an instance and its variations, as a PNG at ``path``."""
    with serving(Studio(G, None, cfg, title=title)) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 640}, device_scale_factor=1)
        page.goto(url)
        idle = "window.studio && window.studio.latents && window.studio.idle()"
        page.wait_for_function(idle, timeout=120_000)
        page.select_option("#example", "scene 1")
        page.click("#load-example")
        page.wait_for_function("document.querySelector('#message').textContent.includes('scene 1')")
        page.wait_for_function(idle)
        H, W = cfg.output_size
        inst = np.array(page.evaluate("Array.from(studio.inst)")).reshape(H, W)
        classes = page.evaluate("studio.classes")
        sizes = np.bincount(inst.ravel(), minlength=len(classes))
        # the largest ellipse (the synthetic class whose colour varies most), else the largest instance
        target = int(max(range(len(classes)), key=lambda i: (classes[i] == 5, sizes[i])))
        page.click(f"#instances li[data-instance='{target}']")
        page.fill("#var-count", "8")
        page.click("#variations")
        page.wait_for_function("document.querySelectorAll('#variation-grid img').length === 8")
        page.screenshot(path=path)
        page.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--checkpoint", default="checkpoints/inade_synthetic/latest.pt")
    ap.add_argument("--chromium", default=os.environ.get("INADE_CHROMIUM") or shutil.which("chromium"))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--screenshot", metavar="PNG", help="only save a screenshot of the synthetic model's page")
    ap.add_argument("--load", action="store_true", help="only the many-pages load test (no browser)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args(argv)
    if args.load:
        return main_load(args)
    from playwright.sync_api import sync_playwright

    if args.screenshot:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            G, cfg, what = models("synthetic", args.checkpoint)
            screenshot(browser, G, cfg, args.screenshot, args.checkpoint if what.startswith("checkpoint") else what)
            browser.close()
        print(f"wrote {args.screenshot} ({what})")
        return 0

    results = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "loadavg_before": os.getloadavg(), "cases": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        results["chromium"] = browser.version
        for name in ("synthetic", "celeba"):
            G, cfg, what = models(name, args.checkpoint)
            results["cases"][name] = {"weights": what, "ngf": cfg.ngf, **measure(browser, G, cfg, args.clicks)}
        browser.close()
    results["loadavg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from inade.utils.files import write_text_atomic

    write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")
    print(f"| model | size | weights | click → image (median) | server (median) | load avg |\n| --- | --- | --- | ---: | ---: | --- |")
    for name, c in results["cases"].items():
        print(f"| {name} ngf {c['ngf']} | {c['size']} | {c['weights']} | {c['click_to_image_median_ms']:.0f} ms "
              f"| {c['server_median_ms']:.0f} ms | {results['loadavg_before'][0]:.1f} → {results['loadavg_after'][0]:.1f} |")
    print(f"wrote {args.out}")
    return 0


def main_load(args) -> int:
    from inade.utils.files import write_text_atomic

    G, cfg, what = models("synthetic", args.checkpoint)
    before = os.getloadavg()
    result = {"weights": what, "ngf": cfg.ngf, "size": "x".join(map(str, cfg.output_size[::-1])),
              **load(G, cfg, args.clients, args.requests), "loadavg_before": before, "loadavg_after": os.getloadavg()}
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["load"] = result
    write_text_atomic(out, json.dumps(results, indent=1) + "\n")
    print(f"{result['clients']} clients × {result['requests_per_client']} variation requests: {result['ok']} of "
          f"{result['answered']} answered 200; median {result['median_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
          f"max {result['max_ms']:.0f} ms, {result['requests_per_s']:.1f} requests/s "
          f"(load {before[0]:.1f} → {result['loadavg_after'][0]:.1f}); wrote {out}")
    return 0 if result["ok"] == result["answered"] == args.clients * args.requests else 1


if __name__ == "__main__":
    raise SystemExit(main())
