"""What the studio's server does for each request, on top of :class:`inade.Synthesizer`.

The server keeps no per-page state: every request carries the page's maps and
latents, so several tabs, a reload or a restarted server never disagree with the
page. On the wire (JSON):

* a map (label or instance) is ``[H, W]`` as base64 of little-endian ``uint16``;
* latents are ``noise`` ``[1, L, 2, noise_nc]`` and ``z`` ``[1, z_dim]`` as base64 of
  little-endian ``float32``, with ``L``;
* images come back as PNG data URLs; uploads arrive as base64 PNG files.

Instance ids arriving from the page may be anything the brushes made or a file held
(a new instance takes the next free id, an erased one leaves a hole). :meth:`Studio.act`
renumbers them to compact ids ``0 … L-1`` and moves each surviving instance's noise row
with it, so painting never changes the style of an instance it did not touch. An id
that covers pixels of several classes (an uploaded COCO-Stuff map) is one instance, as in
training and in the public code: one noise row, each pixel its class's parameters;
re-drawing it re-draws all of its pixels, and the page names it by its largest class. Every
user mistake raises :class:`StudioError`, whose message the page shows; every
request is first checked field by field (:mod:`inade.studio.schema`, pydantic).
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import zipfile

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from inade.data import DatasetError, compact_ids, read_image, read_index_map
from inade.data.images import image_to_tensor, to_uint8
from inade.studio.presets import class_colors, class_names, examples
from inade.studio.schema import MAX_INSTANCES, MAX_VARIATIONS, StudioError, parse
from inade.synthesis import Sample, Synthesizer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_REFERENCE_SIDE = 1024
ENCODER_STRIDE = 16  # the encoder's four stride-2 layers; its deepest instance norm needs 2 or more pixels


# ---------------------------------------------------------------------------
# Wire formats
# ---------------------------------------------------------------------------


def encode_map(a: np.ndarray) -> str:
    """``[H, W]`` integer map (ids ``0 … 65535``) -> base64 of little-endian uint16."""
    return base64.b64encode(np.ascontiguousarray(a, dtype="<u2").tobytes()).decode("ascii")


def _b64(text, what: str) -> bytes:
    if not isinstance(text, str):
        raise StudioError(f"{what}: expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise StudioError(f"{what}: not valid base64 ({err})") from err


def decode_map(text, size: tuple[int, int], what: str) -> np.ndarray:
    """Base64 uint16 map -> ``[H, W]`` int64, checked to be ``size``."""
    data = _b64(text, what)
    H, W = size
    if len(data) != 2 * H * W:
        raise StudioError(f"{what}: {len(data)} bytes, expected {2 * H * W} for a {W}×{H} map")
    return np.frombuffer(data, dtype="<u2").reshape(H, W).astype(np.int64)


def encode_tensor(t: Tensor) -> str:
    """Any float tensor -> base64 of its little-endian float32 values (row-major)."""
    return base64.b64encode(t.detach().cpu().float().contiguous().numpy().astype("<f4").tobytes()).decode("ascii")


def decode_tensor(text, shape: tuple[int, ...], what: str) -> Tensor:
    """Base64 float32 -> a tensor of ``shape`` (finite values only)."""
    data = _b64(text, what)
    n = int(np.prod(shape))
    if len(data) != 4 * n:
        raise StudioError(f"{what}: {len(data)} bytes, expected {4 * n} for shape {list(shape)}")
    t = torch.from_numpy(np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(shape))
    if not torch.isfinite(t).all():
        raise StudioError(f"{what}: holds NaN or infinite values")
    return t


def png_bytes(array: np.ndarray) -> bytes:
    """PNG file of ``[H, W, 3]`` uint8 (RGB) or ``[H, W]`` ids (8-bit grey, 16-bit past 255)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a.astype(np.uint8 if int(a.max(initial=0)) < 256 else np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def data_url(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_upload(text, what: str, size: tuple[int, int] | None) -> io.BytesIO:
    """A base64 PNG upload, checked to be a PNG of ``size`` (``(H, W)``; any when None) before it is decoded."""
    data = _b64(text, what)
    if not data.startswith(PNG_MAGIC):
        raise StudioError(f"{what}: not a PNG file (it does not start with the PNG signature)")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            W, H = img.size
    except Image.DecompressionBombError as err:
        raise StudioError(f"{what}: far too large to decode ({err})") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises several types for a corrupt file
        reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(err))
        raise StudioError(f"{what}: cannot read this PNG ({reason})") from None
    if size is not None and (H, W) != tuple(size):
        raise StudioError(f"{what}: the map is {W}×{H} but this model makes {size[1]}×{size[0]} images")
    if size is None and max(H, W) > MAX_REFERENCE_SIDE:
        raise StudioError(f"{what}: {W}×{H} is larger than {MAX_REFERENCE_SIDE} pixels a side")
    return io.BytesIO(data)


def _decode(reader, buf: io.BytesIO, what: str):
    try:
        return reader(buf)
    except DatasetError as err:
        raise StudioError(f"{what}: {str(err).replace(str(buf), 'the file')}") from err


# ---------------------------------------------------------------------------
# The studio
# ---------------------------------------------------------------------------


class Studio:
    """The studio's actions for one model.

    Args:
        G: an :class:`inade.Generator`; ``E``: its :class:`inade.NoiseEncoder` or ``None``
            (reference style needs it); ``cfg``: their configuration.
        title: what the page shows as the model's name (e.g. the checkpoint file).

    :meth:`act` takes a request dict ``{"action": ..., "state": ..., ...}`` and returns
    the reply dict; :meth:`export` returns a zip file's bytes.
    """

    def __init__(self, G, E, cfg, *, title: str = ""):
        if getattr(cfg, "add_sketch", False):
            raise ValueError("models with add_sketch (an edge-map input) are not supported by the studio")
        self.synth = Synthesizer(G, E, cfg)
        self.cfg, self.title = cfg, title
        self.size = tuple(cfg.output_size)
        self.names = class_names(cfg)
        self.examples = examples(cfg)
        self._device = next(G.parameters()).device

    # -- what the page asks first ----------------------------------------------------
    def info(self) -> dict:
        """Model size, classes (names, colours), examples and what is available."""
        cfg = self.cfg
        return {
            "title": self.title, "preset": cfg.name, "height": self.size[0], "width": self.size[1],
            "classes": self.names, "colors": class_colors(cfg), "examples": list(self.examples),
            "dontcare": cfg.label_nc if cfg.contain_dontcare_label else None,
            "encoder": self.synth.E is not None, "noise_nc": cfg.noise_nc, "z_dim": cfg.z_dim,
            "max_instances": MAX_INSTANCES, "max_variations": MAX_VARIATIONS,
        }

    def act(self, req: dict) -> dict:
        """Carry out ``req["action"]``; see the ``_act_*`` methods for each one's fields."""
        req = parse(req)
        action = req.get("action")
        handler = getattr(self, f"_act_{action}", None) if isinstance(action, str) else None
        if handler is None:
            known = sorted(n[5:] for n in dir(self) if n.startswith("_act_"))
            raise StudioError(f"unknown action {action!r} (known: {', '.join(known)})")
        return handler(req)

    # -- actions that start a picture ---------------------------------------------------
    def _act_example(self, req) -> dict:
        """``name``: one of ``info()["examples"]``; new latents from ``seed``."""
        name = req.get("name")
        if name not in self.examples:
            raise StudioError(f"no example layout {name!r} (examples: {', '.join(self.examples)})")
        label, inst = self.examples[name]
        return self._start(label, inst, self._seed(req), f"example {name!r}")

    def _act_upload(self, req) -> dict:
        """``label_png`` and optional ``inst_png`` (base64 PNG files, the model's size); new latents from ``seed``."""
        label = self._read_label(req.get("label_png"))
        if req.get("inst_png"):
            inst = _decode(read_index_map, _png_upload(req["inst_png"], "instance map", self.size), "instance map")
        else:
            inst = label.copy()
        return self._start(label, inst, self._seed(req), "uploaded maps")

    def _act_random(self, req) -> dict:
        """Every instance's noise and ``z`` new from ``seed``."""
        label, inst = self._maps(req)
        return self._start(label, inst, self._seed(req), "new picture")

    def _start(self, label, inst_raw, seed: int, what: str) -> dict:
        inst, _ = self._compact(label, inst_raw)
        t_label, t_inst = self._tensors(label, inst)
        sample = self.synth.random(t_label, t_inst, seed)
        return self._reply(label, inst, sample, f"{what}, seed {seed}")

    # -- editing --------------------------------------------------------------------------
    def _act_edit(self, req) -> dict:
        """Maps after painting: ids made compact, surviving instances keep their noise rows,
        new instances get rows drawn from ``seed``, ``z`` kept. The reply's ``id_map[old]``
        is each old id's new id (``-1``: gone)."""
        label, inst_raw = self._maps(req)
        noise, z = self._latents(req)
        seed = self._seed(req)
        inst, old_of_new = self._compact(label, inst_raw)
        L_old, L_new = noise.shape[1], len(old_of_new)
        new_noise = self.synth.draw_noise(1, L_new, seed).to(noise)
        id_map = [-1] * L_old
        for new, old in enumerate(old_of_new):
            if 0 <= old < L_old:
                new_noise[:, new] = noise[:, old]
                id_map[old] = new
        sample = self.synth.generate(*self._tensors(label, inst), new_noise.to(self._device), z.to(self._device))
        fresh = sum(1 for old in old_of_new if not 0 <= old < L_old)
        note = f"edit: {L_new} instances" + (f", {fresh} new (seed {seed})" if fresh else "")
        return self._reply(label, inst, sample, note, id_map=id_map)

    # -- re-drawing -----------------------------------------------------------------------
    def _act_redraw_instance(self, req) -> dict:
        """``point`` ``[x, y]`` (map pixels) or ``instance`` id: re-draw that instance's noise
        from ``seed``; every other row and ``z`` kept. ``locked`` ids are refused."""
        label, inst = self._compact_maps(req)
        i = self._pick(req, inst)
        locked = self._locked(req)
        if i in locked:
            raise StudioError(f"instance {i} is locked: unlock it to re-draw it")
        seed = self._seed(req)
        sample = self.synth.resample_instances(*self._tensors(label, inst), self._base(req), [i], seed)
        return self._reply(label, inst, sample, f"re-drew instance {i} ({self._class_of(label, inst, i)}), seed {seed}",
                           instance=i)

    def _act_redraw_class(self, req) -> dict:
        """``class`` id: re-draw every unlocked instance with pixels of that class from ``seed``
        (an instance that spans classes is re-drawn whole)."""
        label, inst = self._compact_maps(req)
        cls = req.get("class")
        if not isinstance(cls, int) or not 0 <= cls < len(self.names):
            raise StudioError(f"class must be an id 0 … {len(self.names) - 1}, got {cls!r}")
        ids = self._instances_of_class(label, inst, cls)
        if not ids:
            raise StudioError(f"class {cls} ({self.names[cls]}) has no instance in the layout")
        ids = [i for i in ids if i not in self._locked(req)]
        if not ids:
            raise StudioError(f"every instance of class {cls} ({self.names[cls]}) is locked")
        seed = self._seed(req)
        sample = self.synth.resample_instances(*self._tensors(label, inst), self._base(req), ids, seed)
        return self._reply(label, inst, sample, f"re-drew class {self.names[cls]} ({len(ids)} instances), seed {seed}")

    def _act_redraw_all(self, req) -> dict:
        """Every unlocked instance from ``seed``; ``z`` too when nothing is locked (it moves the whole picture)."""
        label, inst = self._compact_maps(req)
        base = self._base(req)
        locked = self._locked(req)
        ids = [i for i in range(int(inst.max()) + 1) if i not in locked]
        if not ids:
            raise StudioError("every instance is locked: unlock one to re-draw")
        seed = self._seed(req)
        t = self._tensors(label, inst)
        z = base.z if locked else self.synth.draw_z(1, seed)
        sample = self.synth.resample_instances(*t, base, ids, seed, z=z)
        kept = f", {len(locked)} locked kept" if locked else ""
        return self._reply(label, inst, sample, f"re-drew all{kept}, seed {seed}")

    def _act_variations(self, req) -> dict:
        """``instance`` id, ``count`` N: N re-draws of that instance (seeds ``seed … seed+N-1``
        give the same rows as N single re-draws), in one batch."""
        label, inst = self._compact_maps(req)
        i = self._pick(req, inst)
        count = req.get("count", 4)
        seed = self._seed(req)
        base = self._base(req)
        t_label, t_inst = self._tensors(label, inst)
        noise = torch.cat([self.synth.draw_noise(1, base.noise.shape[1], seed + k) for k in range(count)])
        rows = base.noise.expand(count, -1, -1, -1).clone()
        rows[:, i] = noise[:, i].to(rows)
        z = base.z.expand(count, -1)
        batch = self.synth.generate(t_label.expand(count, -1, -1), t_inst.expand(count, -1, -1), rows, z)
        out = []
        for k in range(count):
            one = Sample(image=batch.image[k:k + 1], noise=rows[k:k + 1], z=base.z)
            out.append(self._reply(label, inst, one, f"variation of instance {i}, seed {seed + k}", instance=i))
        return {"variations": out, "note": f"{count} variations of instance {i}"}

    def _act_copy_style(self, req) -> dict:
        """Reference style through the encoder (paper §3.4).

        ``reference``: ``{"image_png", "inst_png"}``; ``ref_point`` ``[x, y]`` in the reference
        picks its instance ``j``; ``instance`` is the target ``i``; ``strength`` ``s`` in ``[0, 1]``
        blends the reference's distribution with the prior (see
        :meth:`inade.Synthesizer.copy_style`); ``sample`` draws around the reference's mean
        (from ``seed``) instead of taking it. The γ noise gets the encoder's γ statistics and
        the β noise its β statistics.
        """
        if self.synth.E is None:
            raise StudioError("this model has no encoder: start the studio with --encoder (or a checkpoint that holds E)")
        label, inst = self._compact_maps(req)
        i = self._pick(req, inst)
        if i in self._locked(req):
            raise StudioError(f"instance {i} is locked: unlock it to restyle it")
        image, ref_inst = self._reference(req.get("reference"))
        j = self._point(req.get("ref_point"), ref_inst, "reference")
        strength = req.get("strength", 1.0)
        seed = self._seed(req)
        sample = self.synth.copy_style(*self._tensors(label, inst), self._base(req), image, ref_inst, [(j, i)],
                                       sample=bool(req.get("sample", False)), seed=seed, strength=float(strength))
        return self._reply(label, inst, sample, f"style of reference instance {j} on instance {i}, strength {strength:g}",
                           instance=i)

    def _act_reference(self, req) -> dict:
        """Check a reference upload; reply with its size and instance count."""
        _, ref_inst = self._reference(req.get("reference"))
        H, W = ref_inst.shape[1:]
        return {"width": W, "height": H, "instances": int(ref_inst.max()) + 1,
                "note": f"reference {W}×{H}, {int(ref_inst.max()) + 1} instances: click one"}

    # -- export -------------------------------------------------------------------------------
    def export(self, req: dict) -> bytes:
        """A zip of ``image.png``, ``label.png``, ``instance.png``, ``latents.pt`` (the
        ``inade-synth --latents`` format) and ``README.txt`` with the commands that remake it."""
        req = parse(req)
        label, inst = self._maps(req)
        inst_c, order = self._compact(label, inst)
        if not np.array_equal(inst_c, inst):
            raise StudioError("the instance map is not compact yet: wait for the picture to update, then export")
        base = self._base(req)
        sample = self.synth.generate(*self._tensors(label, inst), base.noise, base.z)
        latents = io.BytesIO()
        L = base.noise.shape[1]
        torch.save({"noise": base.noise.cpu(), "z": base.z.cpu(), "instance_ids": torch.arange(L)}, latents)
        files = {
            "image.png": png_bytes(to_uint8(sample.image[0])),
            "label.png": png_bytes(label),
            "instance.png": png_bytes(inst),
            "latents.pt": latents.getvalue(),
            "README.txt": self._readme().encode(),
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return buf.getvalue()

    def _readme(self) -> str:
        ck = self.title or "CHECKPOINT"
        common = f"--checkpoint {ck} --label label.png --inst instance.png --latents latents.pt"
        return (
            "Made with INADE Studio. The same picture, and a change of it, from the command line:\n\n"
            f"  inade-synth render   {common} --out image.png\n"
            f"  inade-synth resample {common} --instances 1 --seed 7 --out other.png\n\n"
            "(add --config NAME for a public *_net_G.pth checkpoint, --encoder for its encoder).\n"
        )

    # -- request parts ---------------------------------------------------------------------------
    @staticmethod
    def _seed(req) -> int:
        return req.get("seed", 0)

    def _state(self, req) -> dict:
        state = req.get("state")
        if not isinstance(state, dict):
            raise StudioError("this action needs the page's state (maps and latents): load a layout first")
        return state

    def _maps(self, req) -> tuple[np.ndarray, np.ndarray]:
        state = self._state(req)
        label = decode_map(state.get("label"), self.size, "label map")
        inst = decode_map(state.get("inst"), self.size, "instance map")
        self._check_classes(label, "label map")
        return label, inst

    def _compact_maps(self, req):
        label, inst = self._maps(req)
        compact, _ = self._compact(label, inst)
        if not np.array_equal(compact, inst):
            raise StudioError("the instance map is not compact: send an edit first")
        return label, inst

    def _latents(self, req) -> tuple[Tensor, Tensor]:
        state = self._state(req)
        L = state.get("L")
        if not isinstance(L, int) or not 1 <= L <= MAX_INSTANCES:
            raise StudioError(f"latents: L must be 1 … {MAX_INSTANCES}, got {L!r}")
        noise = decode_tensor(state.get("noise"), (1, L, 2, self.cfg.noise_nc), "noise")
        z = decode_tensor(state.get("z"), (1, self.cfg.z_dim), "z")
        return noise, z

    def _base(self, req) -> Sample:
        noise, z = self._latents(req)
        L = noise.shape[1]
        _, inst = self._maps(req)
        if int(inst.max()) + 1 != L:
            raise StudioError(f"latents have {L} instances but the instance map has {int(inst.max()) + 1}")
        return Sample(image=None, noise=noise.to(self._device), z=z.to(self._device))

    def _locked(self, req) -> set[int]:
        return set(req.get("locked", []))

    def _pick(self, req, inst: np.ndarray) -> int:
        if req.get("point") is not None:
            return self._point(req["point"], inst[None], "map")
        i = req.get("instance")
        L = int(inst.max()) + 1
        if i is None or not 0 <= i < L:
            raise StudioError(f"no instance selected (instance ids are 0 … {L - 1}, got {i!r}): click one first")
        return i

    @staticmethod
    def _point(point, inst, where: str) -> int:
        """Instance id under ``[x, y]`` of ``inst`` ``[1, H, W]``."""
        H, W = inst.shape[-2:]
        numbers = isinstance(point, (list, tuple)) and len(point) == 2 and all(isinstance(v, (int, float)) for v in point)
        if not (numbers and all(np.isfinite(v) for v in point)):
            raise StudioError(f"a point must be [x, y], got {point!r}")
        x, y = int(np.floor(point[0])), int(np.floor(point[1]))
        if not (0 <= x < W and 0 <= y < H):
            raise StudioError(f"no instance at ({x}, {y}): the click is outside the {where} ({W}×{H})")
        return int(inst[0, y, x])

    def _read_label(self, text) -> np.ndarray:
        if not text:
            raise StudioError("choose a label map PNG to upload")
        label = _decode(read_index_map, _png_upload(text, "label map", self.size), "label map")
        if self.cfg.contain_dontcare_label:
            label[label == 255] = self.cfg.label_nc
        self._check_classes(label, "label map")
        return label

    def _check_classes(self, label: np.ndarray, what: str) -> None:
        n = len(self.names)
        bad = np.unique(label[label >= n])
        if bad.size:
            shown = ", ".join(str(int(b)) for b in bad[:8]) + (" …" if bad.size > 8 else "")
            raise StudioError(f"{what}: class ids {shown} are outside the palette (this model has classes 0 … {n - 1})")

    def _reference(self, ref) -> tuple[Tensor, Tensor]:
        if not isinstance(ref, dict) or not ref.get("image_png") or not ref.get("inst_png"):
            raise StudioError("upload a reference image and its instance map first")
        rgb = _decode(read_image, _png_upload(ref["image_png"], "reference image", None), "reference image")
        H, W = rgb.shape[:2]
        inst = _decode(read_index_map, _png_upload(ref["inst_png"], "reference instance map", (H, W)),
                       "reference instance map")
        s = ENCODER_STRIDE
        if H % s or W % s or H * W < 2 * s * s:
            raise StudioError(f"reference image: {W}×{H}; the encoder needs sides divisible by {s} "
                              f"and at least {2 * s}×{s} pixels")
        inst, _ = compact_ids(inst)
        if int(inst.max()) + 1 > MAX_INSTANCES:
            raise StudioError(f"reference instance map: more than {MAX_INSTANCES} instances")
        image = image_to_tensor(rgb)[None]
        return image.to(self._device), torch.from_numpy(inst)[None].to(self._device)

    # -- helpers --------------------------------------------------------------------------------
    def _compact(self, label: np.ndarray, inst_raw: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Compact ids (one per raw id) and, per new id, the raw id whose noise row it keeps."""
        inst, raw_of = compact_ids(inst_raw)
        L = int(inst.max()) + 1
        if L > MAX_INSTANCES:
            raise StudioError(f"the layout has {L} instances; the studio handles at most {MAX_INSTANCES}")
        return inst, [int(r) for r in raw_of]

    def _tensors(self, label: np.ndarray, inst: np.ndarray) -> tuple[Tensor, Tensor]:
        return (torch.from_numpy(label)[None].to(self._device), torch.from_numpy(np.ascontiguousarray(inst))[None].to(self._device))

    @staticmethod
    def _classes(label: np.ndarray, inst: np.ndarray) -> list[int]:
        """The class of each instance: its largest class when it spans several (the smallest id on a tie)."""
        L = int(inst.max()) + 1
        span = int(label.max()) + 1
        counts = np.bincount(inst.ravel() * span + label.ravel(), minlength=L * span).reshape(L, span)
        return counts.argmax(1).tolist()

    @staticmethod
    def _instances_of_class(label: np.ndarray, inst: np.ndarray, cls: int) -> list[int]:
        """Ids with pixels of class ``cls`` (an id that spans classes counts for each of them)."""
        return np.unique(inst[label == cls]).tolist()

    def _class_of(self, label, inst, i: int) -> str:
        return self.names[self._classes(label, inst)[i]]

    def _reply(self, label, inst, sample: Sample, note: str, *, id_map=None, instance=None) -> dict:
        L = int(inst.max()) + 1
        out = {
            "state": {"label": encode_map(label), "inst": encode_map(inst), "L": L,
                      "noise": encode_tensor(sample.noise), "z": encode_tensor(sample.z)},
            "classes": self._classes(label, inst),
            "image": data_url(png_bytes(to_uint8(sample.image[0]))),
            "note": note,
        }
        if id_map is not None:
            out["id_map"] = id_map
        if instance is not None:
            out["instance"] = instance
        return out
