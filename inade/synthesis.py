"""Diversity control (paper §4.3): instance-level resampling, class-level
resampling, style copying from a reference, and regeneration after editing the maps.

Everything INADE varies per instance is one row of the noise table
``[B, L, 2, noise_nc]`` (index 0 γ, 1 β) shared by all norm layers; the rest of
the image comes from ``z [B, z_dim]`` (the input of the generator's first layer).
A :class:`Sample` keeps both with the image, so a later call changes only the
rows it is asked to and the rest of the picture stays put. ``Sample.noise`` is
the noise as the norms read it (after any remapping), and the generator runs
with ``remap=None``.

All draws come from a ``torch.Generator`` seeded with ``seed`` on the CPU, so a
seed gives the same result on every device, and a row drawn for instance ``l``
does not depend on which other instances are resampled with it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn



@dataclass
class Sample:
    """One synthesis: the images and the latents that made them.

    Attributes:
        image: ``[B, 3, H, W]`` in ``(-1, 1)``.
        noise: ``[B, L, 2, noise_nc]``, the per-instance noise the norms read (index 0 γ, 1 β).
        z: ``[B, z_dim]``, the generator's input latent.
    """

    image: Tensor
    noise: Tensor
    z: Tensor


def _seeded(seed: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for ``seed``; ``stream`` 0 (noise) and 1 (z) never share a state."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator(device="cpu").manual_seed((2 * seed + stream) % 2**64)


def present_instances(inst: Tensor, num_instances: int, where: Tensor | None = None) -> Tensor:
    """``[B, L]`` bool: instance ``l`` has at least one pixel in image ``b`` (among the pixels
    where the bool map ``where [B, H, W]`` is set, when given)."""
    B = inst.shape[0]
    flat = inst.reshape(B, -1).long()
    ones = torch.ones_like(flat) if where is None else where.reshape(B, -1).long()
    counts = torch.zeros(B, num_instances, dtype=torch.long, device=inst.device)
    counts.scatter_add_(1, flat, ones)
    return counts > 0


class Synthesizer:
    """Instance-level control of a trained INADE generator.

    Args:
        G: an :class:`inade.Generator`.
        E: an :class:`inade.NoiseEncoder` (needed only by :meth:`copy_style`).
        cfg: the configuration (default ``G.cfg``).

    ``G`` and ``E`` are put in eval mode (batch norm with running statistics, so an
    image does not depend on the rest of its batch) and run without gradients.

    Every method takes ``label, inst``: ``[B, H, W]`` integer maps on ``G``'s device,
    ``inst`` with compact ids ``0 … L-1`` (the label map when the data has no
    instances), and returns a :class:`Sample`. An id may span several classes (COCO-Stuff's
    instance maps): as in the public code it is one instance — one noise row, re-drawn or
    restyled as a whole — and each of its pixels takes its own class's parameters. Ids given
    to a method (``instances``, ``pairs``) are those of ``inst``.
    Methods that change a previous result take it as ``base`` (a :class:`Sample`,
    or a noise tensor ``[B, L, 2, noise_nc]`` together with ``z=``).
    """

    def __init__(self, G: nn.Module, E: nn.Module | None = None, cfg=None):
        self.G = G.eval()
        self.E = E.eval() if E is not None else None
        self.cfg = cfg if cfg is not None else G.cfg
        self.sketch: Tensor | None = None  # [1, 1, H, W] edge map for models with add_sketch

    # -- drawing --------------------------------------------------------------------
    @property
    def _like(self) -> Tensor:
        return next(self.G.parameters())

    def draw_noise(self, batch: int, num_instances: int, seed: int) -> Tensor:
        """``[batch, num_instances, 2, noise_nc]`` from ``N(0, I)``, a function of ``seed`` only."""
        noise = torch.randn(batch, num_instances, 2, self.cfg.noise_nc, generator=_seeded(seed))
        return noise.to(self._like)

    def draw_z(self, batch: int, seed: int) -> Tensor:
        """``[batch, z_dim]`` from ``N(0, I)``, a function of ``seed`` only (a stream apart from the noise's)."""
        return torch.randn(batch, self.cfg.z_dim, generator=_seeded(seed, stream=1)).to(self._like)

    # -- synthesis ------------------------------------------------------------------
    def generate(self, label: Tensor, inst: Tensor, noise: Tensor, z: Tensor) -> Sample:
        """Run ``G`` with exactly these latents."""
        return self._run(label, inst, noise, z)

    @torch.no_grad()
    def _run(self, label: Tensor, inst: Tensor, noise: Tensor, z: Tensor) -> Sample:
        # The table may keep rows of ids the map no longer has (edit); the generator takes the map's rows.
        extra = {} if self.sketch is None else {"sketch": self.sketch.expand(label.shape[0], -1, -1, -1)}
        image = self.G(label, inst, noise=noise[:, : self._num_instances(inst)], z=z, **extra)
        return Sample(image=image, noise=noise, z=z)

    def random(self, label: Tensor, inst: Tensor, seed: int = 0) -> Sample:
        """A new image: every instance's noise and ``z`` drawn from ``seed``."""
        B, L = label.shape[0], self._num_instances(inst)
        return self._run(label, inst, self.draw_noise(B, L, seed), self.draw_z(B, seed))

    def resample_instances(self, label: Tensor, inst: Tensor, base, instances: Iterable[int], seed: int,
                           *, z: Tensor | None = None) -> Sample:
        """Redraw the noise of ``instances`` (ids, in every image of the batch); every other
        instance and ``z`` keep theirs."""
        noise, z = self._base(base, z, label)
        ids = self._check_ids(instances, inst, noise.shape[1], "instances")
        mask = torch.zeros(noise.shape[:2], dtype=torch.bool, device=noise.device)
        mask[:, ids] = True
        return self._redraw(label, inst, noise, z, mask, seed)

    def resample_class(self, label: Tensor, inst: Tensor, base, class_id: int, seed: int,
                       *, z: Tensor | None = None) -> Sample:
        """Redraw the noise of every instance with pixels of class ``class_id``; the rest keep theirs.

        An instance that spans several classes has one noise row: it is redrawn whole, so its
        pixels of the other classes change too (the public code's ids have no per-class rows)."""
        if not 0 <= int(class_id) <= self.cfg.label_nc:  # (a huge id would overflow the comparison)
            raise ValueError(f"class_id {class_id} is outside the model's classes 0 ... {self.cfg.label_nc}")
        noise, z = self._base(base, z, label)
        if label.shape != inst.shape:
            raise ValueError(f"label {tuple(label.shape)} and inst {tuple(inst.shape)} must have one shape")
        L = noise.shape[1]
        mask = present_instances(inst, max(L, self._num_instances(inst)), where=label == int(class_id))[:, :L]
        if not mask.any():
            present = sorted(set(torch.unique(label).tolist()))
            raise ValueError(f"class_id {class_id} has no instance in label (classes present: {present})")
        return self._redraw(label, inst, noise, z, mask, seed)

    @torch.no_grad()
    def copy_style(self, label: Tensor, inst: Tensor, base, reference_image: Tensor, reference_inst: Tensor,
                   pairs: Sequence[tuple[int, int]], *, z: Tensor | None = None, sample: bool = False,
                   seed: int = 0, strength: float = 1.0) -> Sample:
        """Give target instance ``i`` the style of reference instance ``j`` for each ``(j, i)`` in ``pairs``.

        The encoder maps the reference to per-instance ``(μ, log σ²)`` (paper §3.4); instance
        ``i``'s noise becomes ``μ_j`` (``sample=False``: the reference's style itself) or
        ``μ_j + σ_j · N`` with ``N`` drawn from ``seed`` (``sample=True``). Other rows and
        ``z`` are kept. Copy between instances of the same class for a meaningful result.
        ``strength`` ``s`` in ``[0, 1]`` blends the reference's distribution with the prior
        ``N(0, I)``: mean ``s·μ_j``, std ``s·σ_j + (1 - s)`` (``σ_j`` = 0 with ``sample=False``),
        the standard-normal draw being ``N`` (``sample=True``) or instance ``i``'s current noise
        (``sample=False``); ``s = 1`` is the copy above, ``s = 0`` keeps (or redraws) the prior.
        The γ noise gets the γ statistics and the β noise the β ones (the public demo's copy
        gives both the β statistics).

        Args:
            reference_image: ``[B_r, 3, H_r, W_r]`` in ``[-1, 1]`` (``H_r, W_r`` divisible by 16),
                ``B_r`` = 1 (shared by the batch) or ``B``.
            reference_inst: ``[B_r, H_r, W_r]`` compact instance ids of the reference.
            pairs: ``(j_reference, i_target)`` id pairs.
        """
        if self.E is None:
            raise ValueError("copy_style needs the noise encoder: build Synthesizer(G, E)")
        noise, z = self._base(base, z, label)
        B, L = noise.shape[:2]
        if reference_image.shape[0] not in (1, B):
            raise ValueError(f"reference_image has batch {reference_image.shape[0]}, expected 1 or {B}")
        mu_g, logvar_g, mu_b, logvar_b = self.E(reference_image.to(self._like), reference_inst)
        mu = torch.stack([mu_g, mu_b], dim=2).expand(B, -1, -1, -1)  # [B, L_r, 2, noise_nc]
        std = torch.exp(0.5 * torch.stack([logvar_g, logvar_b], dim=2)).expand(B, -1, -1, -1)
        pairs = [tuple(p) for p in pairs]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError(f"pairs must be a non-empty list of (j_reference, i_target), got {pairs}")
        refs = self._check_ids([j for j, _ in pairs], reference_inst, mu.shape[1], "reference instance")
        targets = self._check_ids([i for _, i in pairs], inst, L, "target instance")
        if len(set(targets)) != len(targets):
            raise ValueError(f"a target instance appears twice in pairs {pairs}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        s = float(strength)
        new = noise.clone()
        if sample:
            draw = self.draw_noise(B, mu.shape[1], seed)[:, refs]
            new[:, targets] = (s * mu[:, refs] + (s * std[:, refs] + 1 - s) * draw).to(noise.dtype)
        else:
            new[:, targets] = (s * mu[:, refs] + (1 - s) * noise[:, targets]).to(noise.dtype)
        return self._run(label, inst, new, z)

    def edit(self, label: Tensor, inst: Tensor, base, seed: int = 0, *, z: Tensor | None = None) -> Sample:
        """Regenerate after editing ``label``/``inst`` (semantic manipulation).

        An instance id that was already in ``base`` keeps its noise; ids past the old
        table get fresh rows drawn from ``seed``; ``z`` is kept. The table keeps the
        rows of ids that disappeared, so bringing one back brings its style back.
        """
        noise, z = self._base(base, z, label)
        B, L_old = noise.shape[:2]
        L_new = max(L_old, self._num_instances(inst))
        if L_new > L_old:
            fresh = self.draw_noise(B, L_new, seed)
            fresh[:, :L_old] = noise
            noise = fresh
        return self._run(label, inst, noise, z)

    # -- helpers --------------------------------------------------------------------
    def _redraw(self, label, inst, noise, z, mask: Tensor, seed: int) -> Sample:
        fresh = self.draw_noise(noise.shape[0], noise.shape[1], seed)
        new = torch.where(mask[:, :, None, None], fresh.to(noise.dtype), noise)
        return self._run(label, inst, new, z)

    def _base(self, base, z, label: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(base, Sample):
            noise, z = base.noise, base.z if z is None else z
        elif isinstance(base, Tensor):
            noise = base
            if z is None:
                raise ValueError("base is a noise tensor: pass z= too (or pass the Sample), so the rest of the image stays put")
        else:
            raise TypeError(f"base must be a Sample or a noise tensor [B, L, 2, noise_nc], got {type(base).__name__}")
        B = label.shape[0]
        if noise.dim() != 4 or noise.shape[0] != B or noise.shape[2:] != (2, self.cfg.noise_nc):
            raise ValueError(
                f"noise must be [B, L, 2, noise_nc] = [{B}, L, 2, {self.cfg.noise_nc}], got {tuple(noise.shape)}"
            )
        if tuple(z.shape) != (B, self.cfg.z_dim):
            raise ValueError(f"z must be [B, z_dim] = [{B}, {self.cfg.z_dim}], got {tuple(z.shape)}")
        return noise, z

    @staticmethod
    def _num_instances(inst: Tensor) -> int:
        if inst.numel() == 0:
            raise ValueError(f"inst is empty: shape {tuple(inst.shape)}")
        if int(inst.min()) < 0:
            raise ValueError(f"inst has a negative id {int(inst.min())}: ids must be compact, 0 … L-1")
        return int(inst.max()) + 1

    @staticmethod
    def _check_ids(ids: Iterable[int], inst: Tensor, num_instances: int, what: str) -> list[int]:
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError(f"no {what} ids given")
        present = present_instances(inst, max(num_instances, int(inst.max()) + 1)).any(0)
        for i in ids:
            if not 0 <= i < num_instances:
                raise ValueError(f"{what} id {i} is out of range: the noise table has {num_instances} instances")
            if not bool(present[i]):
                found = present.nonzero().flatten().tolist()
                raise ValueError(f"{what} id {i} does not occur in its instance map (ids present: {found})")
        return ids
