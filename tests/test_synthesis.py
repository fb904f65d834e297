"""Diversity control (Synthesizer) and the inade-synth CLI (its files are read and written by inade.data).

A tiny generator with fixed weights (32×32 output) stands in for a trained one:
the properties checked — which noise rows change, where the picture changes,
determinism under a seed — do not depend on training.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import inade
from inade.cli import main
from inade.synthesis import Synthesizer
from inade.data import compact_ids, read_image, read_index_map, write_image, write_index_map
from inade.data.images import to_uint8

CFG = dict(ngf=4, noise_nc=4, z_dim=8, crop_size=32)


@pytest.fixture(scope="module")
def cfg():
    return inade.config("synthetic", **CFG)


@pytest.fixture(scope="module")
def G(cfg):
    torch.manual_seed(0)
    G = inade.Generator(cfg).eval()
    with torch.no_grad():  # the 0.02-gain init gives an almost flat image: spread it over the 8-bit range
        G.conv_img.weight.mul_(300.0)
    return G


@pytest.fixture(scope="module")
def maps():
    """Background (class 0, instance 0), two instances of class 2 (ids 1, 3) and one of class 3 (id 2)."""
    label = torch.zeros(1, 32, 32, dtype=torch.long)
    inst = torch.zeros_like(label)
    label[:, 4:14, 3:13], inst[:, 4:14, 3:13] = 2, 1
    label[:, 12:30, 18:30], inst[:, 12:30, 18:30] = 3, 2
    label[:, 20:30, 2:12], inst[:, 20:30, 2:12] = 2, 3
    return label, inst


@pytest.fixture(scope="module")
def base(G, maps):
    return Synthesizer(G).random(*maps, seed=1)


def _changed_rows(a: Tensor, b: Tensor) -> list[int]:
    """Ids whose noise rows differ between two [B, L, 2, C] tables."""
    return (a != b).flatten(2).any(2).any(0).nonzero().flatten().tolist()


# ---------------------------------------------------------------------------
# Synthesizer
# ---------------------------------------------------------------------------


def test_random_is_deterministic(G, maps, base):
    synth = Synthesizer(G)
    again = synth.random(*maps, seed=1)
    assert torch.equal(again.image, base.image) and torch.equal(again.noise, base.noise)
    other = synth.random(*maps, seed=2)
    assert not torch.equal(other.noise, base.noise) and not torch.equal(other.z, base.z)
    assert base.noise.shape == (1, 4, 2, CFG["noise_nc"]) and base.z.shape == (1, CFG["z_dim"])
    assert base.image.shape == (1, 3, 32, 32)


def test_resample_instances_changes_only_those_rows(G, maps, base):
    synth = Synthesizer(G)
    label, inst = maps
    out = synth.resample_instances(label, inst, base, [1], seed=5)
    assert _changed_rows(out.noise, base.noise) == [1]
    assert (out.noise[:, 1] != base.noise[:, 1]).all()  # every entry of the row is new
    assert torch.equal(out.z, base.z)
    # the picture changes inside instance 1 much more than elsewhere
    diff = (out.image - base.image).abs().sum(1)[0]
    inside = inst[0] == 1
    assert diff[inside].mean() > 5 * diff[~inside].mean()
    # a row's draw depends on the seed and the id only, not on the other ids resampled with it
    both = synth.resample_instances(label, inst, base, [1, 2], seed=5)
    assert _changed_rows(both.noise, base.noise) == [1, 2]
    assert torch.equal(both.noise[:, 1], out.noise[:, 1])
    assert torch.equal(synth.resample_instances(label, inst, base, [1], seed=5).image, out.image)


def test_resample_class_changes_every_instance_of_the_class(G, maps, base):
    out = Synthesizer(G).resample_class(*maps, base, class_id=2, seed=7)
    assert _changed_rows(out.noise, base.noise) == [1, 3]
    with pytest.raises(ValueError, match="class_id 5 has no instance"):
        Synthesizer(G).resample_class(*maps, base, class_id=5, seed=7)


class KnownEncoder(nn.Module):
    """Stand-in encoder with known output: μ row l = l + 0.1·c (+10 for β), log σ² = log((l + 1)²)."""

    def __init__(self, noise_nc):
        super().__init__()
        self.noise_nc = noise_nc
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, image, inst):
        B, L = image.shape[0], int(inst.max()) + 1
        ids = torch.arange(L, dtype=torch.float32).view(1, L, 1)
        mu_g = (ids + 0.1 * torch.arange(self.noise_nc)).expand(B, L, -1)
        logvar = (2 * torch.log(ids + 1)).expand(B, L, self.noise_nc)
        return mu_g, logvar, mu_g + 10, logvar


def test_copy_style_copies_exactly_the_rows_asked(G, maps, base):
    label, inst = maps
    E = KnownEncoder(CFG["noise_nc"])
    synth = Synthesizer(G, E)
    ref = torch.zeros(1, 3, 16, 16)
    ref_inst = torch.zeros(1, 16, 16, dtype=torch.long)
    ref_inst[:, :5], ref_inst[:, 5:9] = 1, 4  # ids 0, 1, 4 present
    mu_g, logvar, mu_b, _ = E(ref, ref_inst)
    out = synth.copy_style(label, inst, base, ref, ref_inst, pairs=[(4, 1), (0, 2)])
    assert _changed_rows(out.noise, base.noise) == [1, 2]
    assert torch.equal(out.noise[:, 1, 0], mu_g[:, 4]) and torch.equal(out.noise[:, 1, 1], mu_b[:, 4])
    assert torch.equal(out.noise[:, 2, 0], mu_g[:, 0]) and torch.equal(out.noise[:, 2, 1], mu_b[:, 0])
    assert torch.equal(out.z, base.z)
    # sample=True: μ + σ·N with N drawn from the seed
    drawn = synth.copy_style(label, inst, base, ref, ref_inst, pairs=[(4, 1)], sample=True, seed=3)
    n = synth.draw_noise(1, 5, seed=3)[:, 4]
    torch.testing.assert_close(drawn.noise[:, 1, 0], mu_g[:, 4] + 5.0 * n[:, 0])
    torch.testing.assert_close(drawn.noise[:, 1, 1], mu_b[:, 4] + 5.0 * n[:, 1])
    with pytest.raises(ValueError, match="reference instance id 2 does not occur"):
        synth.copy_style(label, inst, base, ref, ref_inst, pairs=[(2, 1)])
    with pytest.raises(ValueError, match="needs the noise encoder"):
        Synthesizer(G).copy_style(label, inst, base, ref, ref_inst, pairs=[(4, 1)])


def test_copy_style_with_the_encoder(G, cfg, maps, base):
    torch.manual_seed(1)
    E = inade.NoiseEncoder(cfg)
    label, inst = maps
    out = Synthesizer(G, E).copy_style(label, inst, base, base.image, inst, pairs=[(2, 1)])
    mu_g, _, mu_b, _ = E(base.image, inst)
    assert _changed_rows(out.noise, base.noise) == [1]
    assert torch.equal(out.noise[:, 1, 0], mu_g[:, 2]) and torch.equal(out.noise[:, 1, 1], mu_b[:, 2])


def test_edit_keeps_noise_of_persisting_ids(G, maps, base):
    label, inst = maps
    label2, inst2 = label.clone(), inst.clone()
    label2[:, 0:3, 20:30], inst2[:, 0:3, 20:30] = 3, 4  # a new instance, id 4
    out = Synthesizer(G).edit(label2, inst2, base, seed=9)
    assert out.noise.shape[1] == 5
    assert torch.equal(out.noise[:, :4], base.noise) and torch.equal(out.z, base.z)
    assert torch.equal(out.noise[:, 4], Synthesizer(G).draw_noise(1, 5, seed=9)[:, 4])
    # removing an instance keeps its row for later
    inst3 = inst.clone()
    inst3[inst3 == 3] = 0
    label3 = label.clone()
    label3[inst == 3] = 0
    assert torch.equal(Synthesizer(G).edit(label3, inst3, base).noise, base.noise)


def test_synthesizer_keeps_an_instance_spanning_classes_whole(G, maps, base):
    """Instance 0 covering classes 0 and 3 (the public code's meaning of raw ids): one noise row for
    both classes' pixels; re-drawing it re-draws both, and class-level re-drawing of class 3 takes
    the whole id."""
    label, inst = maps
    raw = inst.clone()
    raw[inst == 2] = 0  # instance 2 (class 3) merged into the background id 0 (class 0)
    raw[inst == 3] = 2  # ids stay compact: 0, 1, 2
    synth = Synthesizer(G)
    sample = synth.random(label, raw, seed=1)
    assert sample.noise.shape[1] == 3
    parts, part_inst, _ = inade.nn.instance_parts(label, raw)
    assert part_inst.tolist() == [[0, 1, 2, 0]], "the class-3 part of id 0 reads row 0"
    assert torch.equal(synth.generate(label, parts, sample.noise[:, [0, 1, 2, 0]], sample.z).image, sample.image)
    out = synth.resample_instances(label, raw, sample, [0], seed=5)
    assert _changed_rows(out.noise, sample.noise) == [0]
    diff = (out.image - sample.image).abs().sum(1)[0]
    assert diff[label[0] == 0].mean() > 0 and diff[label[0] == 3].mean() > 0
    by_class = synth.resample_class(label, raw, sample, 3, seed=5)
    assert _changed_rows(by_class.noise, sample.noise) == [0] and torch.equal(by_class.image, out.image)


def test_synthesizer_errors(G, maps, base):
    synth = Synthesizer(G)
    label, inst = maps
    with pytest.raises(ValueError, match="pass z="):
        synth.resample_instances(label, inst, base.noise, [1], seed=0)
    with pytest.raises(ValueError, match="instances id 9 is out of range"):
        synth.resample_instances(label, inst, base, [9], seed=0)
    with pytest.raises(ValueError, match="noise must be"):
        synth.resample_instances(label, inst, base.noise[:, :, :1], [1], seed=0, z=base.z)
    with pytest.raises(TypeError, match="seed must be an int"):
        synth.random(label, inst, seed=1.5)
    for class_id in (-1, 10**30):
        with pytest.raises(ValueError, match=f"class_id {class_id} is outside the model's classes"):
            synth.resample_class(label, inst, base, class_id, seed=0)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, G, cfg):
    """Our checkpoint, a public-style one (bare state dict), and label / instance PNGs (raw ids 0, 7, 300)."""
    d = tmp_path_factory.mktemp("cli")
    torch.save({"G": G.state_dict(), "E": None, "config": cfg.to_dict()}, d / "ours.pt")
    torch.save(G.state_dict(), d / "latest_net_G.pth")
    torch.manual_seed(1)
    torch.save({"G": G.state_dict(), "E": inade.NoiseEncoder(cfg).state_dict(), "config": cfg.to_dict()}, d / "ours_e.pt")
    label = np.zeros((32, 32), np.uint8)
    inst = np.zeros((32, 32), np.uint16)
    label[4:14, 3:13], inst[4:14, 3:13] = 2, 300
    label[12:30, 18:30], inst[12:30, 18:30] = 3, 7
    write_index_map(d / "label.png", label)
    write_index_map(d / "inst.png", inst)
    return d


def _cli(files, *args):
    return main([args[0], "--label", str(files / "label.png"), "--inst", str(files / "inst.png"), *args[1:]])


def test_cli_random_and_resample(files, tmp_path, capsys):
    ck = ["--checkpoint", str(files / "ours.pt")]
    out1, out2 = tmp_path / "a.png", tmp_path / "b.png"
    assert _cli(files, "random", *ck, "--out", str(out1), "--seed", "4", "--save-latents", str(tmp_path / "l.pt")) == 0
    assert _cli(files, "random", *ck, "--out", str(out2), "--seed", "4") == 0
    a = read_image(out1)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert out1.read_bytes() == out2.read_bytes()  # same seed, same picture
    # resample raw instance id 300 (compact id 2), from the saved latents and from --base-seed: same result
    res1, res2 = tmp_path / "r1.png", tmp_path / "r2.png"
    assert _cli(files, "resample", *ck, "--out", str(res1), "--instances", "300", "--seed", "8",
                "--latents", str(tmp_path / "l.pt")) == 0
    assert _cli(files, "resample", *ck, "--out", str(res2), "--instances", "300", "--seed", "8", "--base-seed", "4") == 0
    assert res1.read_bytes() == res2.read_bytes()
    r = read_image(res1).astype(int)
    diff = np.abs(r - a.astype(int)).sum(2)
    assert diff.any()
    # it is the same computation as the Python API's
    synth = Synthesizer(inade.Generator(inade.config("synthetic", **CFG)))
    synth.G.load_state_dict(torch.load(files / "ours.pt", weights_only=True)["G"])
    label = torch.from_numpy(read_index_map(files / "label.png"))[None]
    inst = torch.from_numpy(compact_ids(read_index_map(files / "inst.png"))[0])[None]
    expected = synth.resample_instances(label, inst, synth.random(label, inst, 4), [2], seed=8)
    x = ((expected.image[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(read_image(res1), x)
    assert _cli(files, "resample-class", *ck, "--out", str(tmp_path / "c.png"), "--class", "3", "--seed", "1") == 0


def test_cli_render_remakes_the_picture_of_saved_latents(files, tmp_path):
    ck = ["--checkpoint", str(files / "ours.pt")]
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    assert _cli(files, "random", *ck, "--out", str(first), "--seed", "11", "--save-latents", str(tmp_path / "l.pt")) == 0
    assert _cli(files, "render", *ck, "--out", str(again), "--latents", str(tmp_path / "l.pt")) == 0
    assert first.read_bytes() == again.read_bytes()
    assert _cli(files, "render", *ck, "--out", str(tmp_path / "c.png"), "--base-seed", "11") == 0
    assert (tmp_path / "c.png").read_bytes() == first.read_bytes()


def test_cli_copy_style(files, tmp_path):
    ck = ["--checkpoint", str(files / "ours_e.pt")]
    base, out = tmp_path / "base.png", tmp_path / "copy.png"
    assert _cli(files, "random", *ck, "--out", str(base), "--seed", "2") == 0
    # instance 7 of the reference (here the base picture itself) onto instance 300
    assert _cli(files, "copy-style", *ck, "--out", str(out), "--base-seed", "2", "--reference", str(base),
                "--reference-inst", str(files / "inst.png"), "--pairs", "7:300") == 0
    diff = np.abs(read_image(out).astype(int) - read_image(base).astype(int)).sum(2)
    inside = read_index_map(files / "inst.png") == 300
    assert diff[inside].mean() > diff[~inside].mean()


def test_cli_public_checkpoint_needs_config(files, tmp_path, capsys):
    ck = ["--checkpoint", str(files / "latest_net_G.pth")]
    assert _cli(files, "random", *ck, "--out", str(tmp_path / "o.png")) == 2
    assert "--config" in capsys.readouterr().err
    sets = [x for k, v in CFG.items() for x in ("--set", f"{k}={v}")]
    assert _cli(files, "random", *ck, "--config", "synthetic", *sets, "--out", str(tmp_path / "o.png"), "--seed", "4") == 0
    assert _cli(files, "random", *ck, "--config", "synthetic", "--out", str(tmp_path / "x.png")) == 2  # wrong width
    assert "does not fit" in capsys.readouterr().err


def test_cli_errors_are_one_line_naming_the_file(files, tmp_path, capsys):
    """Every user error: exit code 2, one line ``error: …`` on stderr naming the file, nothing written."""
    ck = ["--checkpoint", str(files / "ours.pt")]
    out = ["--out", str(tmp_path / "o.png")]
    lab = ["--label", str(files / "label.png")]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((files / "ours.pt").read_bytes()[:300])
    foreign = tmp_path / "foreign.pt"
    torch.save({"G": np.zeros(3)}, foreign)  # a numpy array: refused by the weights-only reader
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    big_class = tmp_path / "big_class.png"
    write_index_map(big_class, np.full((32, 32), 9, np.uint8))  # the synthetic config has 6 classes
    cases = [
        (["random", "--checkpoint", str(tmp_path / "none.pt"), *lab, *out], "none.pt: no such file"),
        (["random", "--checkpoint", str(junk), *lab, *out], "junk.pt: not a PyTorch checkpoint"),
        (["random", "--checkpoint", str(cut), *lab, *out], "cut.pt: not a complete PyTorch checkpoint"),
        (["random", "--checkpoint", str(foreign), *lab, *out], "foreign.pt: holds a Python object (numpy"),
        (["random", *ck, "--label", str(tmp_path / "missing.png"), *out], "missing.png: no such file"),
        (["random", *ck, "--label", str(bad_png), *out], "bad.png: cannot read it"),
        (["random", *ck, "--label", str(big_class), *out], "big_class.png has class 9, outside 0 ... 5"),
        (["random", *ck, *lab, "--out", str(tmp_path / "o.xyz")], "o.xyz: cannot tell the image format"),
        (["resample", *ck, "--label", str(files / "label.png"), "--inst", str(files / "inst.png"), *out,
          "--instances", "5"], "--instances [5] not in the instance map"),
        (["copy-style", *ck, "--label", str(files / "label.png"), *out, "--reference", "r.png",
          "--reference-inst", "ri.png", "--pairs", "1:2"], "has no encoder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (message, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "weights_only" not in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.xyz").exists()


def test_cli_keeps_an_instance_spanning_classes_whole_like_the_loader(files, cfg, tmp_path):
    """COCO-Stuff style files (raw id 0 for all stuff, across classes 0 and 3): the CLI keeps id 0 one
    instance, as the data loader and the public code do, and gives the Python API's image."""
    label = np.zeros((32, 32), np.uint8)
    inst = np.zeros((32, 32), np.uint8)
    label[16:, :] = 3  # stuff: classes 0 and 3, both raw id 0
    label[4:12, 4:12], inst[4:12, 4:12] = 2, 5  # a thing
    write_index_map(tmp_path / "label.png", label)
    write_index_map(tmp_path / "inst.png", inst)
    ck = ["--checkpoint", str(files / "ours.pt"), "--label", str(tmp_path / "label.png"), "--inst", str(tmp_path / "inst.png")]
    assert main(["random", *ck, "--out", str(tmp_path / "a.png"), "--seed", "3"]) == 0
    loader_ids, raw_of = compact_ids(inst.astype(np.int64))
    assert raw_of.tolist() == [0, 5]
    G = inade.Generator(cfg).eval()
    G.load_state_dict(torch.load(files / "ours.pt", weights_only=True)["G"])
    lab_t = torch.from_numpy(label.astype(np.int64))[None]
    expected = Synthesizer(G).random(lab_t, torch.from_numpy(loader_ids)[None], seed=3)
    assert expected.noise.shape[1] == 2
    assert np.array_equal(read_image(tmp_path / "a.png"), to_uint8(expected.image[0]))
    # resampling raw id 0 redraws its one row: both classes' pixels change, not the thing
    assert main(["resample", *ck, "--out", str(tmp_path / "r.png"), "--instances", "0", "--seed", "4",
                 "--base-seed", "3"]) == 0
    diff = np.abs(read_image(tmp_path / "r.png").astype(int) - read_image(tmp_path / "a.png").astype(int)).sum(2)
    thing = inst == 5
    assert diff[label == 0].mean() > 0 and diff[label == 3].mean() > 0
    assert diff[~thing].mean() > 5 * diff[thing].mean()


def test_cli_copy_style_takes_a_jpeg_reference(files, tmp_path):
    ck = ["--checkpoint", str(files / "ours_e.pt")]
    base_png = tmp_path / "base.png"
    assert _cli(files, "random", *ck, "--out", str(base_png), "--seed", "2") == 0
    jpg = tmp_path / "ref.jpg"
    write_image(jpg, read_image(base_png))
    assert jpg.read_bytes()[:2] == b"\xff\xd8"  # a JPEG file
    out = tmp_path / "copy.jpg"
    assert _cli(files, "copy-style", *ck, "--out", str(out), "--base-seed", "2", "--reference", str(jpg),
                "--reference-inst", str(files / "inst.png"), "--pairs", "7:300") == 0
    assert out.read_bytes()[:2] == b"\xff\xd8" and read_image(out).shape == (32, 32, 3)


def test_cli_latents_name_the_raw_id_of_each_row(files, tmp_path, capsys):
    """One row per raw id, also for an id that spans classes; latents made for another map are refused."""
    label = np.zeros((32, 32), np.uint8)
    label[16:] = 3
    inst = np.zeros((32, 32), np.uint8)
    inst[2:8, 2:8], label[2:8, 2:8] = 9, 2
    write_index_map(tmp_path / "label.png", label)
    write_index_map(tmp_path / "inst.png", inst)
    ck = ["--checkpoint", str(files / "ours.pt"), "--label", str(tmp_path / "label.png"), "--inst", str(tmp_path / "inst.png")]
    assert main(["random", *ck, "--out", str(tmp_path / "a.png"), "--save-latents", str(tmp_path / "l.pt")]) == 0
    saved = torch.load(tmp_path / "l.pt", weights_only=True)
    assert saved["instance_ids"].tolist() == [0, 9] and saved["noise"].shape[1] == 2
    assert main(["resample", *ck, "--out", str(tmp_path / "r.png"), "--instances", "9", "--latents", str(tmp_path / "l.pt")]) == 0
    assert main(["resample", "--checkpoint", str(files / "ours.pt"), "--label", str(files / "label.png"), "--inst",
                 str(files / "inst.png"), "--out", str(tmp_path / "x.png"), "--instances", "7",
                 "--latents", str(tmp_path / "l.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "latents were made for instance ids [0, 9]" in err


def test_cli_reads_palette_and_rgb_maps_by_the_loaders_rule(files, tmp_path, capsys):
    """A palette label map and a greyscale-as-RGB instance map give the same picture as the greyscale files;
    a colour-coded RGB map is refused in one line."""
    from PIL import Image

    label = read_index_map(files / "label.png").astype(np.uint8)
    inst = read_index_map(files / "inst.png")
    pal = Image.fromarray(label, mode="L").convert("P")
    pal.putpalette([(37 * i) % 256 for i in range(768)])
    pal.save(tmp_path / "label_p.png")
    ids = compact_ids(inst)[0].astype(np.uint8)  # raw ids 0, 7, 300 -> 0, 1, 2 (8-bit), same instances
    Image.fromarray(np.repeat(ids[..., None], 3, axis=2)).save(tmp_path / "inst_rgb.png")
    ck = ["--checkpoint", str(files / "ours.pt"), "--seed", "6"]
    assert _cli(files, "random", *ck, "--out", str(tmp_path / "a.png")) == 0
    assert main(["random", *ck, "--label", str(tmp_path / "label_p.png"), "--inst", str(tmp_path / "inst_rgb.png"),
                 "--out", str(tmp_path / "b.png")]) == 0
    assert np.array_equal(read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png"))
    coded = np.zeros((32, 32, 3), np.uint8)
    coded[:, 16:, 1] = 1  # two ids that differ only in G
    Image.fromarray(coded).save(tmp_path / "coded.png")
    assert main(["random", *ck, "--label", str(files / "label.png"), "--inst", str(tmp_path / "coded.png"),
                 "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "coded.png: an RGB map is read as its first channel" in err
    assert not (tmp_path / "c.png").exists()


def test_cli_user_error_from_the_entry_point(tmp_path):
    res = subprocess.run([sys.executable, "-m", "inade.cli", "random", "--checkpoint", str(tmp_path / "none.pt"),
                          "--label", "l.png", "--out", str(tmp_path / "o.png")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr == f"error: {tmp_path / 'none.pt'}: no such file\n", res.stderr


def test_cli_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "inade.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "resample-class" in res.stdout
