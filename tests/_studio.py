"""Shared set-up of the studio tests: a tiny random model and a server on a free port.

The generator is the synthetic preset narrowed to ``ngf = 4`` (64×64 output) with
its output layer scaled up so a random net's image spans the 8-bit range; the
properties tested (which pixels change after a stroke or a click, what errors
say) do not depend on training.
"""
from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import torch

import inade
from inade.studio import Studio

CFG = dict(ngf=4, noise_nc=4, z_dim=8)


def tiny_models():
    """``(G, E, cfg)``: a 64×64 synthetic-preset generator and encoder with fixed random weights."""
    cfg = inade.config("synthetic", **CFG)
    torch.manual_seed(0)
    G, E = inade.Generator(cfg), inade.NoiseEncoder(cfg)
    with torch.no_grad():  # the 0.02-gain init gives an almost flat image: spread it over the 8-bit range
        G.conv_img.weight.mul_(300.0)
    return G, E, cfg


def tiny_studio() -> Studio:
    return Studio(*tiny_models(), title="tiny.pt")


def write_checkpoint(path) -> None:
    """Our checkpoint format (``G``, ``E``, ``config``) for the tiny model."""
    G, E, cfg = tiny_models()
    torch.save({"G": G.state_dict(), "E": E.state_dict(), "config": cfg.to_dict()}, path)


def post(url: str, body, *, raw: bytes | None = None, timeout: float = 60, content_type: str = "application/json"):
    """``(status, parsed JSON or bytes)`` of a POST (errors included)."""
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, payload, kind = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        status, payload, kind = err.code, err.read(), err.headers.get("Content-Type", "")
    return status, (json.loads(payload) if "json" in kind else payload)


def get(url: str, timeout: float = 30):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def png_b64(array: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode_map(text: str, shape=(64, 64)) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u2").reshape(shape).astype(np.int64)


def encode_map(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<u2").tobytes()).decode()


def image_of(data_url: str) -> np.ndarray:
    """``[H, W, 3]`` int from a PNG data URL."""
    from PIL import Image

    png = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int64)
