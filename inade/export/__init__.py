"""Ship a trained INADE model: ONNX graphs and an AOTInductor package of the generator
(and of the encoder), run by onnxruntime or by torch alone, without this package.

    python -m inade.export --checkpoint C --format onnx --out inade.onnx [--encoder]
    python -m inade.export --checkpoint C --format pt2  --out inade.pt2

The graph is :class:`inade.export.graphs.GeneratorGraph` (standard operators: spectral
norms folded, the INADE norm as row gathers, no value read), captured once by
:func:`torch.export.export` with the batch and the number of instances dynamic
(:func:`generator_program`), then written by

* :func:`write_onnx`: ``torch.onnx.export`` (the ``torch.export``-based exporter, opset
  :data:`OPSET`), one self-contained ``.onnx`` file with the options in its metadata;
* :func:`write_pt2`: ``torch._inductor.aoti_compile_and_package``, a ``.pt2`` package of
  compiled C++ (needs a C++ compiler at export time) that
  ``torch._inductor.aoti_load_package`` runs.

Inputs of the generator graph: ``label [B, H, W]`` int64, ``inst [B, H, W]`` int64 ids
``0 … L-1``, ``noise [B, L, 2, noise_nc]`` float32, ``z [B, z_dim]`` float32 (and ``sketch
[B, 1, H, W]`` for an ``add_sketch`` model); output ``image [B, 3, H, W]``. ``B`` and ``L``
(up to ``max_instances``) are dynamic; ``H, W`` are the model's (its first layer makes a
grid of fixed size). See docs/EXPORT.md.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from pathlib import Path

import torch

from inade.export.graphs import DECOMPOSITIONS, EncoderGraph, GeneratorGraph
from inade.utils.errors import UserError
from inade.utils.files import atomic_path

OPSET = 18  # the encoder's pooling is ScatterElements(reduction=add) (16+); tested with onnxruntime at 18
MAX_BATCH = 1024  # the batch dimension's upper bound in the exported graphs
DEFAULT_MAX_INSTANCES = 256

__all__ = ["DEFAULT_MAX_INSTANCES", "OPSET", "EncoderGraph", "GeneratorGraph", "encoder_program",
           "example_inputs", "generator_program", "metadata", "save_onnx", "save_pt2", "write_onnx",
           "write_pt2"]


def example_inputs(cfg, batch: int = 2, num_instances: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of the generator graph for ``cfg``: ``{label, inst, noise, z}`` (and ``sketch`` for an
    ``add_sketch`` model), ``batch`` images of ``num_instances`` instances in vertical bands, the
    class of instance ``l`` being ``l % num_classes``; ``image`` too, for the encoder graph."""
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.output_size
    inst = (torch.arange(H)[:, None] * num_instances // H).expand(H, W)
    inst = inst[None].repeat(batch, 1, 1).contiguous()
    out = {"label": inst % cfg.num_classes, "inst": inst,
           "noise": torch.randn(batch, num_instances, 2, cfg.noise_nc, generator=g),
           "z": torch.randn(batch, cfg.z_dim, generator=g)}
    if getattr(cfg, "add_sketch", False):
        out["sketch"] = (torch.rand(batch, 1, H, W, generator=g) > 0.9).float()
    out["image"] = torch.rand(batch, 3, H, W, generator=g) * 2 - 1
    return out


def _dims(max_instances: int):
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    instances = torch.export.Dim("instances", min=1, max=max_instances) if max_instances > 1 else None
    return batch, instances


def check_max_instances(max_instances: int) -> None:
    """``--max-instances`` is at least 1 and below 2**24 (ids stay exact in float32 resampling)."""
    if not 1 <= max_instances < 2**24:
        raise UserError(f"--max-instances must be between 1 and {2**24 - 1}, got {max_instances}")


def generator_program(G, max_instances: int = DEFAULT_MAX_INSTANCES) -> torch.export.ExportedProgram:
    """``G`` (a :class:`inade.Generator`, put in eval mode) as an exported program of standard
    operators, batch and number of instances (``1 … max_instances``) dynamic."""
    check_max_instances(max_instances)
    G.eval()
    graph = GeneratorGraph(G).eval()
    x = example_inputs(G.cfg, num_instances=min(3, max_instances))
    batch, instances = _dims(max_instances)
    names = ["label", "inst", "noise", "z"] + (["sketch"] if graph.add_sketch else [])
    shapes = {"label": {0: batch}, "inst": {0: batch}, "noise": {0: batch, 1: instances}, "z": {0: batch},
              "sketch": {0: batch}}
    with torch.no_grad():
        return torch.export.export(graph, tuple(x[n] for n in names), dynamic_shapes={n: shapes[n] for n in names})


def encoder_program(E, max_instances: int = DEFAULT_MAX_INSTANCES) -> torch.export.ExportedProgram:
    """The encoder graph (:class:`EncoderGraph`: ``(image, inst, noise) -> noise``) as an exported
    program of standard operators (its instance-aware ops replaced by their reference passes)."""
    from inade.ops import use_backend  # noqa: PLC0415

    check_max_instances(max_instances)
    E.eval()
    graph = EncoderGraph(E).eval()
    x = example_inputs(E.cfg, num_instances=min(3, max_instances))
    batch, instances = _dims(max_instances)
    shapes = {"image": {0: batch}, "inst": {0: batch}, "noise": {0: batch, 1: instances}}
    with torch.no_grad(), use_backend("auto"):  # the custom ops, not the reference's value checks
        program = torch.export.export(graph, (x["image"], x["inst"], x["noise"]), dynamic_shapes=shapes)
    return decompose_our_ops(program)


def decompose_our_ops(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with every ``inade::`` custom op replaced by its reference pass
    (:data:`inade.export.graphs.DECOMPOSITIONS`); an op without one is an error naming it."""
    ours = {n.target for n in program.graph.nodes if n.op == "call_function"
            and getattr(n.target, "namespace", None) == "inade"}
    if not ours:
        return program
    table = {}
    for op in ours:
        name = op.name().split("::")[1].split(".")[0]
        if name not in DECOMPOSITIONS:
            raise NotImplementedError(f"the exported graph holds inade::{name}, which has no export decomposition")
        table[op] = DECOMPOSITIONS[name]
    return program.run_decompositions(table)


def metadata(cfg, max_instances: int, graph: str) -> dict[str, str]:
    """What an exported file records about itself (strings): the graph, its inputs' sizes, the limits."""
    H, W = cfg.output_size
    return {"inade.graph": graph, "inade.height": str(H), "inade.width": str(W),
            "inade.num_classes": str(cfg.num_classes), "inade.noise_nc": str(cfg.noise_nc),
            "inade.z_dim": str(cfg.z_dim), "inade.max_instances": str(max_instances),
            "inade.max_batch": str(MAX_BATCH), "inade.add_sketch": str(bool(getattr(cfg, "add_sketch", False))),
            "inade.config": json.dumps(cfg.to_dict(), sort_keys=True, default=str)}


def write_onnx(program: torch.export.ExportedProgram, path, meta: dict[str, str], output: str) -> Path:
    """:func:`save_onnx` to ``path`` atomically (a reader sees the old file or the whole new one)."""
    with atomic_path(path) as tmp:
        save_onnx(program, tmp, meta, output)
    return Path(path)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's notes that say nothing about the user's model (``torchvision is not installed.
    Skipping torchvision::nms`` per operator, pytree deprecations) stay off the terminal; its errors
    still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def save_onnx(program: torch.export.ExportedProgram, path, meta: dict[str, str], output: str) -> None:
    """``program`` as one ONNX file at ``path`` (opset :data:`OPSET`, weights inside): the
    ``torch.export``-based exporter of ``torch.onnx.export``; its dynamic axes named ``batch``
    and ``instances``, ``meta`` in its metadata, its output named ``output``."""
    import onnx  # noqa: PLC0415

    with torch.no_grad(), _quiet_exporter():
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=OPSET, output_names=[output],
                                         external_data=False, verbose=False)
    proto = onnx_program.model_proto
    _name_dynamic_axes(proto)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))


# the axes of the graphs' inputs that may vary, by input name and axis
DYNAMIC_AXES = {("label", 0): "batch", ("inst", 0): "batch", ("noise", 0): "batch", ("z", 0): "batch",
                ("sketch", 0): "batch", ("image", 0): "batch", ("noise", 1): "instances"}


def _name_dynamic_axes(proto) -> None:
    """Rename the exporter's symbols (``s30`` …) after :data:`DYNAMIC_AXES` everywhere in the graph."""
    rename = {}
    for value in proto.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            new = DYNAMIC_AXES.get((value.name, axis))
            if dim.dim_param and new:
                rename[dim.dim_param] = new
    if not rename:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, rename)) + r")\b")
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: rename[m.group(1)], dim.dim_param)


def write_pt2(program: torch.export.ExportedProgram, path, meta: dict[str, str]) -> Path:
    """:func:`save_pt2` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        save_pt2(program, tmp, meta)
    return Path(path)


def save_pt2(program: torch.export.ExportedProgram, path, meta: dict[str, str]) -> None:
    """``program`` compiled by AOTInductor for the CPU into a ``.pt2`` package at ``path`` (any
    name: it is written through a file object), ``meta`` in its metadata. Needs a C++ compiler.

    The package checks its inputs' dtypes and shapes against the exported ranges (batch
    ``1 … MAX_BATCH``, instances ``1 … max_instances``) when the process that runs it has
    ``AOTI_RUNTIME_CHECK_INPUTS=1`` (the lower bound 1 kept: ``check_lowerbound`` off)."""
    configs = {"aot_inductor.metadata": dict(meta), "aot_inductor.check_lowerbound": False}
    with open(path, "wb") as f:
        torch._inductor.aoti_compile_and_package(program, package_path=f, inductor_configs=configs)
