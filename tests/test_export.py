"""``python -m inade.export``: the exported generator (ONNX in onnxruntime; the AOTInductor
``.pt2`` in a fresh process that never imports ``inade``) equals ``G(label, inst, noise, z)``
of the checkpoint within 1e-4 of the image's range, for two layouts with different numbers
of instances; the encoder graph equals the encoder's remapping; docs/EXPORT.md's example
runs as written; bad input is one line and leaves nothing behind.

The model is the synthetic preset at its tiniest (ngf 4, 32×32), its batch-norm running
statistics set by two training-mode forwards as in a trained checkpoint. Each format is
exported once per module (ONNX about half a minute, the ``.pt2`` C++ build one to two
minutes on two cores).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import inade
from inade.models.generator import remap_noise

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ROOT = Path(__file__).resolve().parents[1]
MAX_INSTANCES = 8
TOLERANCE = 1e-4  # of the largest |value| of the eager output


def tiny_config():
    return inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32, load_size=32)


def layouts(cfg):
    """Two layouts: one image of 2 horizontal bands; three images of 7 instances in 4×4 blocks
    (every id in one class: its class is ``id % num_classes``)."""
    H, W = cfg.output_size
    g = torch.Generator().manual_seed(3)
    two = (torch.arange(H)[:, None] * 2 // H).expand(H, W)[None].contiguous()
    coarse = torch.randint(0, 7, (3, H // 4, W // 4), generator=g)
    coarse[:, 0, 0] = 6  # every id up to 6 present in the batch
    coarse[:, 0, 1:7] = torch.arange(6)
    seven = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2).contiguous()
    out = []
    for inst in (two, seven):
        B, L = inst.shape[0], int(inst.max()) + 1
        out.append({"label": inst % cfg.num_classes, "inst": inst,
                    "noise": torch.randn(B, L, 2, cfg.noise_nc, generator=g), "z": torch.randn(B, cfg.z_dim, generator=g),
                    "image": torch.rand(B, 3, H, W, generator=g) * 2 - 1})
    return out


def assert_close(got, want):
    got, want = torch.as_tensor(got), torch.as_tensor(want)
    assert got.shape == want.shape
    err = (got - want).abs().max().item()
    assert err <= TOLERANCE * want.abs().max().item(), f"max |exported - eager| = {err:.3g}"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """``(checkpoint path, G, E)``: random weights, running statistics from two training forwards."""
    torch.manual_seed(0)
    cfg = tiny_config()
    G, E = inade.Generator(cfg), inade.NoiseEncoder(cfg)
    with torch.no_grad():
        x = layouts(cfg)[1]  # (B=3: the 1×1 first layer has a batch statistic)
        for _ in range(2):
            G.train()(x["label"], x["inst"], x["noise"], x["z"])
    path = tmp_path_factory.mktemp("export") / "ck.pt"
    torch.save({"G": G.state_dict(), "E": E.state_dict(), "config": cfg.to_dict()}, path)
    return path, G.eval(), E.eval()


def export(args) -> None:
    from inade.export.__main__ import main

    assert main([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def onnx_files(model):
    out = model[0].parent / "g.onnx"
    export(["--checkpoint", model[0], "--format", "onnx", "--out", out, "--encoder", "--max-instances", MAX_INSTANCES])
    return out, out.with_name("g.encoder.onnx")


@pytest.mark.parametrize("which", [0, 1], ids=["B1-L2", "B3-L7"])
def test_onnx_generator_equals_eager(model, onnx_files, which):
    G = model[1]
    x = layouts(G.cfg)[which]
    session = ort.InferenceSession(str(onnx_files[0]), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {k: x[k].numpy() for k in ("label", "inst", "noise", "z")})
    with torch.no_grad():
        assert_close(got, G(x["label"], x["inst"], x["noise"], x["z"]))


def test_onnx_encoder_then_generator_equals_eager(model, onnx_files):
    _, G, E = model
    x = layouts(G.cfg)[1]
    enc = ort.InferenceSession(str(onnx_files[1]), providers=["CPUExecutionProvider"])
    gen = ort.InferenceSession(str(onnx_files[0]), providers=["CPUExecutionProvider"])
    (noise,) = enc.run(None, {k: x[k].numpy() for k in ("image", "inst", "noise")})
    (got,) = gen.run(None, {"label": x["label"].numpy(), "inst": x["inst"].numpy(), "noise": noise, "z": x["z"].numpy()})
    with torch.no_grad():
        styles = E(x["image"], x["inst"])
        assert_close(noise, remap_noise(x["noise"], styles))
        assert_close(got, G(x["label"], x["inst"], x["noise"], x["z"], remap=styles))


def test_onnx_inputs_axes_and_metadata(model, onnx_files):
    import onnx

    proto = onnx.load(str(onnx_files[0]))
    assert proto.opset_import[0].version >= 17
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node), "a custom operator in the graph"
    session = ort.InferenceSession(str(onnx_files[0]), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes == {"label": ["batch", 32, 32], "inst": ["batch", 32, 32], "noise": ["batch", "instances", 2, 4],
                      "z": ["batch", 8]}
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["inade.max_instances"] == str(MAX_INSTANCES) and meta["inade.noise_nc"] == "4"
    assert json.loads(meta["inade.config"])["ngf"] == 4


def test_graph_equals_eager_in_float64():
    """The graph's arithmetic is the generator's (float64, no rounding to hide behind), also for an
    id whose pixels lie in two classes where the generator accepts one."""
    from inade.export.graphs import GeneratorGraph

    torch.manual_seed(1)
    cfg = tiny_config()
    G = inade.Generator(cfg).double().eval()
    for m in G.modules():  # statistics far from (0, 1), as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    x = layouts(cfg)[1]
    noise, z = x["noise"].double(), x["z"].double()
    label = x["label"].clone()
    graph = GeneratorGraph(G)
    with torch.no_grad():
        torch.testing.assert_close(graph(label, x["inst"], noise, z), G(label, x["inst"], noise, z), rtol=0, atol=1e-10)
        label[:, :, : label.shape[2] // 2] = 0  # ids now span class 0 and their own
        try:
            want = G(label, x["inst"], noise, z)
        except ValueError as err:
            pytest.skip(f"the generator refuses ids that span classes: {err}")
        torch.testing.assert_close(graph(label, x["inst"], noise, z), want, rtol=0, atol=1e-10)


def test_graph_equals_eager_with_a_sketch_and_more_upsampling():
    """The sketch input (``add_sketch``) and the ``more`` schedule's extra upsampling, float64."""
    from inade.export import example_inputs
    from inade.export.graphs import GeneratorGraph

    torch.manual_seed(2)
    cfg = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=64, load_size=64, add_sketch=True,
                       num_upsampling_layers="more")
    G = inade.Generator(cfg).double().eval()
    x = {k: v.double() if v.is_floating_point() else v for k, v in example_inputs(cfg, 2, 3).items()}
    with torch.no_grad():
        want = G(x["label"], x["inst"], x["noise"], x["z"], sketch=x["sketch"])
        got = GeneratorGraph(G)(x["label"], x["inst"], x["noise"], x["z"], x["sketch"])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


# -- the .pt2 in a fresh process ----------------------------------------------------

RUN_PT2 = """
import sys, torch
package, inputs, outputs = sys.argv[1:4]
G = torch._inductor.aoti_load_package(package)
results = [G(x["label"], x["inst"], x["noise"], x["z"]) for x in torch.load(inputs)]
torch.save(results, outputs)
assert "inade" not in sys.modules, "loading the package imported inade"
x = torch.load(inputs)[0]
try:
    G(x["label"], x["inst"], torch.zeros(1, int(G.get_metadata()["inade.max_instances"]) + 1, 2, 4), x["z"])
except RuntimeError as err:
    print("refused:", err)
"""


def test_pt2_in_a_fresh_process_equals_eager(model, tmp_path):
    G = model[1]
    package = tmp_path / "g.pt2"
    export(["--checkpoint", model[0], "--format", "pt2", "--out", package, "--max-instances", MAX_INSTANCES])
    xs = layouts(G.cfg)
    torch.save([{k: x[k] for k in ("label", "inst", "noise", "z")} for x in xs], tmp_path / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["AOTI_RUNTIME_CHECK_INPUTS"] = "1"  # the package checks the exported ranges
    proc = subprocess.run([sys.executable, "-c", RUN_PT2, str(package), "inputs.pt", "outputs.pt"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(rf"refused: .*too large.*<= {MAX_INSTANCES}", proc.stdout), proc.stdout + proc.stderr[-2000:]
    got = torch.load(tmp_path / "outputs.pt")
    with torch.no_grad():
        for x, y in zip(xs, got):
            assert_close(y, G(x["label"], x["inst"], x["noise"], x["z"]))


# -- docs/EXPORT.md's example ---------------------------------------------------------


def example_code() -> str:
    text = (ROOT / "docs" / "EXPORT.md").read_text()
    return text.split("<!-- export-example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_docs_example_runs_as_written(model, onnx_files, tmp_path):
    from PIL import Image

    G = model[1]
    H, W = G.cfg.output_size
    label = np.zeros((H, W), np.uint8)
    label[H // 3 :, :] = 2
    label[H // 2 :, W // 2 :] = 5
    Image.fromarray(label).save(tmp_path / "label.png")
    script = tmp_path / "example.py"
    script.write_text(example_code())
    assert len(example_code().strip().splitlines()) <= 16
    proc = subprocess.run([sys.executable, str(script), str(onnx_files[0]), "label.png", "out.png"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(int)
    # The same picture from the eager generator: the example's draws, in its order.
    rng = np.random.default_rng(0)
    inst = np.unique(label, return_inverse=True)[1].reshape(1, H, W)
    noise = rng.standard_normal((1, 3, 2, G.cfg.noise_nc), dtype=np.float32)
    z = rng.standard_normal((1, G.cfg.z_dim), dtype=np.float32)
    with torch.no_grad():
        image = G(torch.from_numpy(label.astype(np.int64))[None], torch.from_numpy(inst), torch.from_numpy(noise),
                  torch.from_numpy(z))
    from inade.data.images import to_uint8

    assert np.abs(got - to_uint8(image[0]).astype(int)).max() <= 1
    assert got.std() > 0


# -- bad input: one line, nothing written ------------------------------------------------


def _error(capsys, args) -> str:
    from inade.export.__main__ import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", ["no-generator", "encoder-file", "max-instances", "size", "out-under-a-file",
                                  "no-encoder", "format"])
def test_bad_input_is_one_line(model, tmp_path, capsys, case):
    ck = model[0]
    out = tmp_path / "g.onnx"
    args = ["--checkpoint", ck, "--format", "onnx", "--out", out]
    if case == "no-generator":
        torch.save({"noise": torch.zeros(1, 2, 2, 4), "z": torch.zeros(1, 8)}, tmp_path / "latents.pt")
        args[1], needles = tmp_path / "latents.pt", ["latents.pt", "holds no generator"]
    elif case == "encoder-file":
        torch.save(model[2].state_dict(), tmp_path / "net_E.pth")
        args[1], needles = tmp_path / "net_E.pth", ["net_E.pth", "encoder, not a generator"]
    elif case == "max-instances":
        args, needles = args + ["--max-instances", "0"], ["--max-instances"]
    elif case == "size":
        args, needles = args + ["--size", "64", "48"], ["--size 64 48", "32x32"]
    elif case == "out-under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "g.onnx"
        args[5], needles = out, ["--out", "is a file"]
    elif case == "no-encoder":
        torch.save({"G": model[1].state_dict(), "E": None, "config": model[1].cfg.to_dict()}, tmp_path / "g_only.pt")
        args[1], needles = tmp_path / "g_only.pt", ["--encoder", "holds no encoder"]
        args.append("--encoder")
    else:
        args[3], needles = "tflite", ["--format"]
    line = _error(capsys, args)
    for needle in needles:
        assert needle in line, line
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".onnx") == []


def test_an_existing_output_is_kept_without_overwrite(model, tmp_path, capsys):
    """A file already at --out, or at the encoder's derived name, is the user's: one line, kept as it was."""
    out = tmp_path / "g.onnx"
    for existing in (out, tmp_path / "g.encoder.onnx"):
        existing.write_text("mine")
        line = _error(capsys, ["--checkpoint", model[0], "--format", "onnx", "--out", out, "--encoder"])
        assert str(existing) in line and "--overwrite" in line, line
        assert existing.read_text() == "mine"
        existing.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing(model, tmp_path, capsys, monkeypatch):
    """A write that fails half-way (a full disk) is one line; no output and no temporary file remain,
    also for the generator's file when the encoder's fails."""
    import errno

    import inade.export as X

    def half_then_full(program, path, meta, output):
        Path(path).write_bytes(b"half")
        if output != "image":
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(X, "generator_program", lambda G, L: "program")
    monkeypatch.setattr(X, "encoder_program", lambda E, L: "program")
    monkeypatch.setattr(X, "save_onnx", half_then_full)
    out = tmp_path / "g.onnx"
    line = _error(capsys, ["--checkpoint", model[0], "--format", "onnx", "--out", out, "--encoder"])
    assert "g.encoder.onnx" in line and "cannot write" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []
