"""Drop-in modules for SPADE/INADE codebases: the public code's (tzt101/INADE) classes,
constructors, parameter and buffer names and forward signatures, run by this
package's ops.

Swap three names in a SPADE-style codebase and keep the rest (options, training
loop, checkpoints)::

    from inade.compat import ILADE                 # models/networks/normalization.py
    from inade.compat import InstanceAwareConv2d   # models/networks/partialconv2d.py
    instAvgPooling = staticmethod(inade.compat.instAvgPooling)  # in instanceAdaptiveEncoder

What changes is how they compute, not what: the one-hot maps the public code passes
(``segmap`` ``[B, label_nc + 1, H, W]`` with the instance-edge channel last,
``input_instances`` ``[B, K, H, W]``) are read once per call into integer index maps
(one max over the channels, no other ``[B, K, H, W]`` tensor), resized to each
layer's size with nearest sampling and handed to :func:`inade.ops.instance_modulation`,
:func:`inade.ops.instance_conv2d` and :func:`inade.ops.instance_avg_pool` — no dense
per-pixel ``γ``/``β`` maps, no ``einsum``, no ``unfold``. Successive calls with the
same map tensors (every norm of one generator forward) share the index maps.

Exactly the public function for one-hot maps (every pixel has one class and one
instance, as its ``preprocess_input`` builds them); an instance that spans several
classes is handled per (instance, class) pair, as the dense maps do. Odd sizes are
accepted (the public conv views its output as ``H // stride``, which needs even sizes;
this one has the usual convolution size, equal for even inputs).
"""
from __future__ import annotations

import re
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.nn import INADENorm, InstanceConv2d, resize_index_map
from inade.ops import instance_avg_pool, instance_conv2d, instance_modulation

__all__ = ["ILADE", "InstanceAwareConv2d", "instAvgPooling", "one_hot_to_index"]


# ---------------------------------------------------------------------------
# One-hot maps -> index maps, once per map tensor
# ---------------------------------------------------------------------------


def one_hot_to_index(onehot: Tensor, name: str = "map") -> Tensor:
    """``[B, K, H, W]`` one-hot (float) -> ``[B, H, W]`` int64 ids: the hot channel of each pixel.

    One reduction over the channels; no ``[B, K, H, W]`` temporary.

    Raises:
        ValueError: not ``[B, K, H, W]``, or (outside ``torch.compile``) a pixel with no hot channel.
    """
    if not isinstance(onehot, Tensor) or onehot.dim() != 4:
        shape = tuple(onehot.shape) if isinstance(onehot, Tensor) else type(onehot).__name__
        raise ValueError(f"{name} must be a one-hot map [B, K, H, W], got {shape}")
    values, index = onehot.max(dim=1)
    if not torch.compiler.is_compiling() and values.numel() and bool((values <= 0).any()):
        raise ValueError(f"{name} has pixels with no hot channel: every pixel needs one class / one instance")
    return index


class _MapCache:
    """The last inputs' derived index maps, keyed by the identity and version of the map tensors
    (weak references: a freed tensor never matches a new one at the same address)."""

    def __init__(self):
        self._key, self._refs, self.value = None, (), None

    def get(self, tensors: tuple, build):
        if torch.compiler.is_compiling():
            return build()
        key = tuple((t._version, tuple(t.shape), t.dtype, t.device) if t is not None else None for t in tensors)
        alive = len(self._refs) == len(tensors) and all(
            (r is None and t is None) or (r is not None and r() is t) for r, t in zip(self._refs, tensors)
        )
        if not (alive and key == self._key):
            self._key, self.value = key, build()
            self._refs = tuple(weakref.ref(t) if t is not None else None for t in tensors)
        return self.value


class _Pairs:
    """Per-pixel (instance, class) pairs of one forward, compact over the batch.

    ``ids [B, H, W]`` full-resolution pair ids; ``inst [P]`` and ``cls [P]`` the instance
    and class of each pair; resized id maps are kept per size.
    """

    def __init__(self, label: Tensor, inst: Tensor, num_classes: int):
        key = inst.long() * num_classes + label.long()
        uniq, ids = torch.unique(key, return_inverse=True)
        self.ids, self.inst, self.cls = ids.reshape(label.shape), uniq // num_classes, uniq % num_classes
        self._levels: dict[tuple[int, int], Tensor] = {}

    def at(self, size) -> Tensor:
        size = (int(size[0]), int(size[1]))
        if size not in self._levels:
            self._levels[size] = resize_index_map(self.ids, size)
        return self._levels[size]


_NORM_MAPS = _MapCache()  # (segmap, input_instances) -> pairs, shared by the norms of a forward
_CONV_MAPS = _MapCache()  # float id map -> int64 ids, shared by the encoder's convs
_POOL_MAPS = _MapCache()  # one-hot instances -> ids, shared by the four pooled heads


# ---------------------------------------------------------------------------
# The norm
# ---------------------------------------------------------------------------


class ILADE(INADENorm):
    """The public code's INADE norm (``models/networks/normalization.py: ILADE``).

    Args:
        config_text: ``spade<norm><k>x<k>``, the public ``norm_G`` without ``spectral``
            (``spadesyncbatch3x3``; ``syncbatch`` and ``batch`` are batch norm — set
            :attr:`process_group` to synchronise it — and ``instance`` is instance norm;
            the kernel size is ignored, as in the public code).
        norm_nc: channels ``C`` of the normalised activations.
        label_nc: rows of the class tables (classes plus don't-care).
        noise_nc: channels of the per-instance noise.
        add_sketch: the 2021-12 sketch branch (``sketch_conv``, ``merge_conv``).

    Parameters and buffers: ``weight``, ``bias`` ``[label_nc, norm_nc, 2]``,
    ``param_free_norm`` (running statistics for batch norm), ``fc_noise``, and with
    ``add_sketch`` ``sketch_conv``, ``merge_conv`` — the public keys.
    """

    def __init__(self, config_text: str, norm_nc: int, label_nc: int, noise_nc: int, add_sketch: bool = False):
        parsed = re.search(r"spade(\D+)(\d)x\d", config_text or "")
        if not config_text.startswith("spade") or parsed is None:
            raise ValueError(f"config_text must look like 'spadesyncbatch3x3', got {config_text!r}")
        kind = parsed.group(1)
        if kind not in ("syncbatch", "batch", "instance"):
            raise ValueError(f"{kind!r} is not a param-free norm of ILADE: use syncbatch, batch or instance")
        super().__init__(norm_nc, label_nc, noise_nc, add_sketch=add_sketch)
        self.norm_nc, self.param_free_type = norm_nc, kind
        if kind == "instance":
            self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)

    def forward(self, x: Tensor, segmap: Tensor, input_instances: Tensor | None = None, noise: Tensor | None = None,
                sketch: Tensor | None = None) -> Tensor:
        """The public ``ILADE.forward``.

        Args:
            x: ``[B, norm_nc, h, w]``.
            segmap: ``[B, label_nc + 1, H, W]`` one-hot classes with the instance-edge channel
                last (dropped here, as in the public code); nearest-resized to ``(h, w)``.
            input_instances: ``[B, K, H', W']`` one-hot instances; nearest-resized to ``(h, w)``.
            noise: ``[B, K, 2, noise_nc]`` (index 0 γ, 1 β).
            sketch: ``[B, 1, H'', W'']`` edge map, with ``add_sketch``.

        Returns:
            ``[B, norm_nc, h, w]``.
        """
        label_nc = self.weight.shape[0]
        if input_instances is None or noise is None:
            raise ValueError("ILADE needs input_instances [B, K, H, W] and noise [B, K, 2, noise_nc]")
        if segmap.dim() != 4 or segmap.shape[1] != label_nc + 1:
            raise ValueError(
                f"segmap must be [B, label_nc + 1, H, W] = [B, {label_nc + 1}, H, W] (classes, then the "
                f"instance-edge channel), got {tuple(segmap.shape)}"
            )
        if noise.dim() != 4 or noise.shape[:3] != (x.shape[0], input_instances.shape[1], 2):
            raise ValueError(
                f"noise must be [B, K, 2, noise_nc] with K = input_instances.shape[1] = {input_instances.shape[1]}, "
                f"got {tuple(noise.shape)}"
            )
        if self.add_sketch and sketch is None:
            raise ValueError("If add sketch, sketch input should not be None: pass sketch [B, 1, H, W]")
        pairs = _NORM_MAPS.get((segmap, input_instances), lambda: self._pairs(segmap, input_instances))
        out = self._modulate_pairs(x, pairs, noise)
        if self.add_sketch:
            out = self.merge_sketch(out, F.interpolate(sketch, size=x.shape[2:], mode="nearest"))
        return out

    @staticmethod
    def _pairs(segmap: Tensor, input_instances: Tensor) -> _Pairs:
        label = one_hot_to_index(segmap[:, :-1], "segmap")
        inst = one_hot_to_index(input_instances, "input_instances")
        if label.shape != inst.shape:  # both are resized to each layer's size: pair them at the finer one
            size = (max(label.shape[1], inst.shape[1]), max(label.shape[2], inst.shape[2]))
            label, inst = resize_index_map(label, size), resize_index_map(inst, size)
        return _Pairs(label, inst, segmap.shape[1] - 1)

    def _modulate_pairs(self, x: Tensor, pairs: _Pairs, noise: Tensor) -> Tensor:
        ids = pairs.at(x.shape[2:])
        B = x.shape[0]
        cls = pairs.cls.expand(B, -1)
        pair_noise = noise.index_select(1, pairs.inst)
        if self.param_free_type != "instance":
            return self.modulate(x, ids, cls, pair_noise)
        # Instance norm: normalise here, then modulate with identity statistics.
        gamma, beta = self.tables(cls, pair_noise)
        normalized = F.instance_norm(x, eps=self.param_free_norm.eps)
        ones = torch.ones(x.shape[1], dtype=torch.float32 if x.dtype != torch.float64 else x.dtype, device=x.device)
        return instance_modulation(normalized, ids, gamma.to(x.dtype), beta.to(x.dtype), running_mean=ones * 0,
                                   running_var=ones, training=False, eps=0.0)


# ---------------------------------------------------------------------------
# The encoder's conv and pooling
# ---------------------------------------------------------------------------


class InstanceAwareConv2d(InstanceConv2d):
    """The public code's ``InstanceAwareConv2d(fin, fout, kw, stride=1, padding=1)``
    (``models/networks/partialconv2d.py``): a conv whose taps count only inside the
    window centre's instance; no renormalisation; bias always added.

    Parameters ``weight [fout, fin, kw, kw]``, ``bias [fout]``, initialised like the public
    code (``nn.Conv2d``'s rule). Output ``[B, fout, ⌈h / stride⌉, ⌈w / stride⌉]`` for
    ``kw = 3, padding = 1`` (the public ``h // stride`` for even sizes; odd sizes work).
    """

    def __init__(self, fin: int, fout: int, kw: int, stride: int = 1, padding: int = 1):
        super().__init__(fin, fout, kw, stride=stride, padding=padding, bias=True)
        self.kw, self.fin, self.fout = kw, fin, fout

    def forward(self, x: Tensor, instances: Tensor, check: bool = False) -> Tensor:
        """``x [B, fin, h, w]``, ``instances [B, 1, H, W]`` float instance ids (the argmax of the
        one-hot map; nearest-resized to ``(h, w)``) -> ``[B, fout, h', w']``.

        ``check=True`` also verifies that the ids are whole non-negative numbers."""
        if not isinstance(instances, Tensor) or instances.dim() != 4 or instances.shape[1] != 1:
            shape = tuple(instances.shape) if isinstance(instances, Tensor) else type(instances).__name__
            raise ValueError(f"instances must be a float id map [B, 1, H, W], got {shape}")
        if check and bool(((instances != instances.round()) | (instances < 0)).any()):
            raise ValueError("instances must hold whole non-negative ids (the argmax of the one-hot map)")
        full = _CONV_MAPS.get((instances,), lambda: instances[:, 0].long())
        inst = resize_index_map(full, x.shape[2:])
        return instance_conv2d(x, inst, self.weight, self.bias, self.stride, self.padding)


def instAvgPooling(x: Tensor, instances: Tensor) -> Tensor:  # noqa: N802 - the public code's name
    """The public encoder's ``instAvgPooling``: the mean of ``x [B, C, H, W]`` over each
    instance of the one-hot ``instances [B, K, H, W]`` -> ``[B, K, C]`` (0 for an instance
    with no pixels). One index map, one pooling pass (the public code loops over K)."""
    if not isinstance(instances, Tensor) or instances.dim() != 4 or instances.shape[2:] != x.shape[2:]:
        shape = tuple(instances.shape) if isinstance(instances, Tensor) else type(instances).__name__
        raise ValueError(f"instances must be one-hot [B, K, H, W] at x's size {tuple(x.shape[2:])}, got {shape}")
    inst = _POOL_MAPS.get((instances,), lambda: one_hot_to_index(instances, "instances"))
    return instance_avg_pool(x, inst, instances.shape[1])
