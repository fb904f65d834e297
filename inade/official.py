"""Load the authors' public checkpoints (tzt101/INADE ``best_net_G.pth``,
``best_net_IE.pth`` / ``best_net_E.pth``) into :class:`inade.Generator` and
:class:`inade.NoiseEncoder`.

Our modules use the public code's names, so its state dicts load as they are:
spectral-norm ``weight_orig`` / ``weight_u`` / ``weight_v``, the norms' ``weight``
/ ``bias`` tables, ``param_free_norm`` running statistics and ``fc_noise``. Build
the module with the matching configuration first (``inade.config("cityscapes")``
etc.; DeepFashion's checkpoint has ``noise_nc = 8``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from inade.utils.checkpoint_io import first_non_finite, load_checkpoint
from inade.utils.errors import UserError

PREFIXES = ("module.", "netG.", "netE.", "netIE.")


def _read(path_or_state_dict) -> Mapping[str, torch.Tensor]:
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        state = load_checkpoint(path_or_state_dict)  # a missing or corrupt file: one UserError naming it
    elif isinstance(path_or_state_dict, Mapping):
        state = path_or_state_dict
        bad = first_non_finite(state)
        if bad is not None:  # a file was checked by load_checkpoint; a state dict is checked here
            raise UserError(f"state dict: tensor {bad} holds NaN or inf values, so these weights are unusable")
    else:
        raise TypeError(
            f"path_or_state_dict must be a file path or a state dict, got {type(path_or_state_dict).__name__}"
        )
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return _strip_prefixes(state)


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix (``module.`` from DataParallel …) shared by every key."""
    state = dict(state)
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def compare_state_dicts(expected: Mapping[str, tuple], actual: Mapping[str, tuple]) -> list[str]:
    """Differences between two ``{key: shape}`` maps, one readable line each.

    Args:
        expected: the module's keys and shapes.
        actual: the checkpoint's keys and shapes.
    """
    problems = []
    for key in expected:
        if key not in actual:
            problems.append(f"missing key {key} (the model expects shape {list(expected[key])})")
    for key in actual:
        if key not in expected:
            problems.append(f"unexpected key {key} (shape {list(actual[key])} in the checkpoint)")
    for key in expected:
        if key in actual and tuple(expected[key]) != tuple(actual[key]):
            problems.append(
                f"shape mismatch at {key}: checkpoint {list(actual[key])}, model {list(expected[key])}"
            )
    return problems


def _hint(problems: list[str]) -> str:
    text = " ".join(problems)
    hints = []
    if "weight_orig" in text:
        hints.append("spectral-norm keys differ: the public generator uses norm_G='spectralspadesyncbatch3x3'")
    if "norm_0.weight" in text or "fc_noise" in text:
        hints.append("norm tables differ: check label_nc, contain_dontcare_label and noise_nc (8 for DeepFashion)")
    if "sketch_conv" in text or "merge_conv" in text:
        hints.append("sketch keys differ: the checkpoint was trained with --add_sketch iff it has sketch_conv / "
                     "merge_conv (build the model with add_sketch to match)")
    if "fc.weight" in text:
        hints.append("fc differs: check crop_size, aspect_ratio, num_upsampling_layers, z_dim and ngf")
    return ("; hint: " + "; ".join(hints)) if hints else ""


def load_official(module: nn.Module, path_or_state_dict, strict: bool = True) -> nn.Module:
    """Load a public INADE checkpoint into ``module`` (in place) and return it.

    Args:
        module: an :class:`inade.Generator` or :class:`inade.NoiseEncoder` built with the
            checkpoint's configuration.
        path_or_state_dict: a ``.pth`` file path or an already loaded state dict. A
            ``module.`` prefix (DataParallel) is removed.
        strict: raise on any missing, unexpected or mis-shaped key (default). With
            ``False`` the matching keys load and the rest are reported in a warning.

    Raises:
        ValueError: naming every missing key, unexpected key and shape mismatch.
        UserError: a missing, damaged (CRC-32) or unreadable file, or a NaN / inf tensor,
            naming the file (or the state dict's) and the tensor (:mod:`inade.utils.checkpoint_io`).
    """
    state = _read(path_or_state_dict)
    own = module.state_dict()
    problems = compare_state_dicts(
        {k: tuple(v.shape) for k, v in own.items()}, {k: tuple(v.shape) for k, v in state.items()}
    )
    if problems and strict:
        raise ValueError(
            f"checkpoint does not fit {type(module).__name__} ({len(problems)} problem(s)):\n  "
            + "\n  ".join(problems)
            + _hint(problems)
        )
    if problems:
        import warnings  # noqa: PLC0415

        warnings.warn("load_official skipped:\n  " + "\n  ".join(problems), RuntimeWarning, stacklevel=2)
        state = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    with torch.no_grad():
        module.load_state_dict(state, strict=strict)
    return module
