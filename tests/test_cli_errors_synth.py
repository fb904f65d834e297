"""Every user error of ``inade-synth`` and ``python -m inade.data.prepare``: exit 2, one ``error:`` line
naming the option or file, no traceback, and nothing written.

The table runs the entry points in-process (``main(argv)``, stderr captured) and checks the
result with :func:`tests._cli.assert_user_error`, as for a subprocess; a few cases run as real
subprocesses (``run_cli``) to show the same holds for the program a user starts.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import inade
from inade.cli import main as synth_main
from inade.data import write_index_map
from inade.data.prepare import main as prepare_main
from tests._cli import assert_user_error, run_cli
from tests.test_image_faults import png_claiming

CFG = dict(ngf=4, noise_nc=4, z_dim=8, crop_size=32)  # classes 0 ... 5


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Checkpoints (with and without encoder), 32x32 maps, and hostile files."""
    d = tmp_path_factory.mktemp("synth_errors")
    cfg = inade.config("synthetic", **CFG)
    torch.manual_seed(0)
    G = inade.Generator(cfg)
    torch.save({"G": G.state_dict(), "E": None, "config": cfg.to_dict()}, d / "ck.pt")
    torch.save({"G": G.state_dict(), "E": inade.NoiseEncoder(cfg).state_dict(), "config": cfg.to_dict()}, d / "cke.pt")
    label = np.zeros((32, 32), np.uint8)
    inst = np.zeros((32, 32), np.uint8)
    label[4:14, 3:13], inst[4:14, 3:13] = 2, 7
    write_index_map(d / "label.png", label)
    write_index_map(d / "inst.png", inst)
    write_index_map(d / "label40.png", np.zeros((40, 40), np.uint8))
    Image.fromarray(label).save(d / "label.jpg", quality=100)
    Image.new("L", (6000, 6000)).save(d / "big.png")
    png_claiming(d / "bomb.png", 65535, 65535)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "ref.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(d / "ref40.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(d / "ref64.png")
    torch.save({"noise": torch.full((1, 2, 2, 4), float("nan")), "z": torch.zeros(1, 8)}, d / "nan_latents.pt")
    torch.save({"noise": torch.zeros(1, 2, 2, 4), "z": "not a tensor"}, d / "bad_latents.pt")
    data = (d / "label.png").read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[60] ^= 0xFF  # inside the compressed pixels: the header reads, the decoding fails
    (d / "flipped.png").write_bytes(bytes(flipped))
    (d / "folder").mkdir()
    (d / "a_file").write_text("x")
    return d


def _synth_cases():
    """(id, argv with {d} for the fixture folder, what the error line must name)."""
    rand = "random --checkpoint {d}/ck.pt --label {d}/label.png --out {d}/out/o.png"
    res = "resample --checkpoint {d}/ck.pt --label {d}/label.png --inst {d}/inst.png --out {d}/out/o.png"
    cls = "resample-class --checkpoint {d}/ck.pt --label {d}/label.png --out {d}/out/o.png"
    copy = ("copy-style --checkpoint {d}/cke.pt --label {d}/label.png --inst {d}/inst.png --out {d}/out/o.png "
            "--reference {d}/ref.png --reference-inst {d}/inst.png")
    return [
        ("no-command", "", "the following arguments are required"),
        ("unknown-option", rand + " --bogus 1", "unrecognized arguments: --bogus"),
        ("seed-nan", rand + " --seed nan", "--seed"),
        ("seed-float", rand + " --seed 1.5", "--seed"),
        ("base-seed-inf", res + " --instances 7 --base-seed inf", "--base-seed"),
        ("device-banana", rand + " --device banana", "--device banana"),
        ("device-cuda-none", rand + " --device cuda:3", "--device cuda:3"),
        ("device-meta", rand + " --device meta", "--device meta"),
        ("checkpoint-missing", "random --checkpoint {d}/none.pt --label {d}/label.png --out {d}/out/o.png", "none.pt"),
        ("checkpoint-folder", "random --checkpoint {d}/folder --label {d}/label.png --out {d}/out/o.png",
         "--checkpoint {d}/folder: is a folder"),
        ("checkpoint-not-torch", "random --checkpoint {d}/label.png --label {d}/label.png --out {d}/out/o.png",
         "label.png"),
        ("encoder-folder", rand + " --encoder {d}/folder", "--encoder {d}/folder: is a folder"),
        ("config-unknown", rand + " --config banana", "--config: unknown configuration 'banana'"),
        ("set-no-equals", rand + " --set ngf", "--set expects key=value"),
        ("set-unknown-key", rand + " --set banana=1", "unknown option(s) banana"),
        ("set-negative", rand + " --set ngf=-4", "ngf must be a positive int"),
        ("set-nan", rand + " --set crop_size=nan", "crop_size must be a positive int"),
        ("label-missing", "random --checkpoint {d}/ck.pt --label {d}/none.png --out {d}/out/o.png", "none.png: no such file"),
        ("label-folder", "random --checkpoint {d}/ck.pt --label {d}/folder --out {d}/out/o.png", "folder: is a folder"),
        ("label-not-image", "random --checkpoint {d}/ck.pt --label {d}/a_file --out {d}/out/o.png", "a_file: cannot read"),
        ("label-truncated", "random --checkpoint {d}/ck.pt --label {d}/cut.png --out {d}/out/o.png",
         "cut.png: cannot read it as a label/instance map"),
        ("label-corrupt", "random --checkpoint {d}/ck.pt --label {d}/flipped.png --out {d}/out/o.png",
         "flipped.png: cannot read it as a label/instance map"),
        ("label-jpeg", "random --checkpoint {d}/ck.pt --label {d}/label.jpg --out {d}/out/o.png",
         "label.jpg: label and instance maps must be lossless (PNG): JPEG changes class ids at edges"),
        ("label-other-size", "random --checkpoint {d}/ck.pt --label {d}/label40.png --out {d}/out/o.png",
         "label40.png: a label/instance map is 40x40 (HxW) but the model's output"),
        ("label-6000-png", "random --checkpoint {d}/ck.pt --label {d}/big.png --out {d}/out/o.png",
         "big.png: a label/instance map is 6000x6000"),
        ("label-bomb", "random --checkpoint {d}/ck.pt --label {d}/bomb.png --out {d}/out/o.png", "bomb.png: refused to decode"),
        ("inst-other-size", rand + " --inst {d}/label40.png", "label40.png: a label/instance map is 40x40"),
        ("inst-bomb", rand + " --inst {d}/bomb.png", "bomb.png: refused to decode"),
        ("sketch-bomb", rand + " --sketch {d}/bomb.png", "bomb.png: refused to decode"),
        ("out-folder", "random --checkpoint {d}/ck.pt --label {d}/label.png --out {d}/folder", "--out {d}/folder: is a folder"),
        ("out-below-a-file", "random --checkpoint {d}/ck.pt --label {d}/label.png --out {d}/a_file/o.png",
         "--out {d}/a_file/o.png"),
        ("out-extension", "random --checkpoint {d}/ck.pt --label {d}/label.png --out {d}/out/o.xyz", "o.xyz"),
        ("latents-out-folder", rand + " --save-latents {d}/folder", "--save-latents {d}/folder: is a folder"),
        ("latents-out-below-a-file", rand + " --save-latents {d}/a_file/l.pt", "--save-latents {d}/a_file/l.pt"),
        ("latents-out-is-out", rand + " --save-latents {d}/out/o.png", "--save-latents"),
        ("instances-negative", res + " --instances -3", "--instances [-3] not in the instance map"),
        ("instances-huge", res + " --instances 99999999999999999999", "not in the instance map"),
        ("instances-not-ints", res + " --instances 1e3", "--instances expects comma-separated integers"),
        ("instances-empty", res + " --instances ,", "no instances ids given"),
        ("class-negative", cls + " --class -1", "--class -1"),
        ("class-huge", cls + " --class 99999999999999999999", "--class 99999999999999999999"),
        ("class-absent", cls + " --class 4", "class_id 4 has no instance"),
        ("latents-folder", res + " --instances 7 --latents {d}/folder", "--latents {d}/folder: is a folder"),
        ("latents-a-checkpoint", res + " --instances 7 --latents {d}/ck.pt", "ck.pt: not a latents file"),
        ("latents-nan", res + " --instances 7 --latents {d}/nan_latents.pt", "nan_latents.pt"),
        ("latents-not-tensors", res + " --instances 7 --latents {d}/bad_latents.pt", "bad_latents.pt"),
        ("copy-no-encoder", copy.replace("cke.pt", "ck.pt") + " --pairs 7:7", "has no encoder"),
        ("reference-bomb", copy.replace("ref.png", "bomb.png") + " --pairs 7:7", "bomb.png: refused to decode"),
        ("reference-6000-png", copy.replace("ref.png", "big.png") + " --pairs 7:7", "big.png: an image is 6000x6000"),
        ("reference-not-multiple-of-16", copy.replace("ref.png", "ref40.png") + " --pairs 7:7",
         "--reference {d}/ref40.png: the image is 40x40 (HxW); the encoder needs both sides multiples of 16"),
        ("reference-inst-other-size", copy.replace("ref.png", "ref64.png") + " --pairs 7:7",
         "inst.png: a label/instance map is 32x32 (HxW) but the reference image {d}/ref64.png is 64x64"),
        ("pairs-malformed", copy + " --pairs 7-7", "--pairs expects ref_id:target_id"),
        ("pairs-negative", copy + " --pairs=-1:7", "--pairs reference ids [-1] not in the instance map"),
        ("pairs-twice", copy + " --pairs 7:7,0:7", "a target instance appears twice"),
    ]


SYNTH_CASES = _synth_cases()


def _in_process(main, argv, capsys) -> subprocess.CompletedProcess:
    code = main(argv)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out.out, out.err)


@pytest.mark.parametrize("argv,needle", [c[1:] for c in SYNTH_CASES], ids=[c[0] for c in SYNTH_CASES])
def test_inade_synth_user_errors(argv, needle, d, capsys):
    proc = _in_process(synth_main, argv.format(d=d).split(), capsys)
    assert_user_error(proc, needle.format(d=d))
    assert not (d / "out").exists(), "a failed command wrote something"


def test_a_failed_save_latents_leaves_no_image(d, capsys):
    """``--out a.png --save-latents BAD``: refused before writing; and a latents write that fails
    late (full disk) leaves neither file, nor a temporary one, and an earlier a.png as it was."""
    out = d / "late" / "a.png"
    argv = ["random", "--checkpoint", str(d / "ck.pt"), "--label", str(d / "label.png"), "--out", str(out)]
    assert_user_error(_in_process(synth_main, [*argv, "--save-latents", str(d / "folder")], capsys), "--save-latents")
    assert not out.exists()
    assert synth_main(argv + ["--seed", "1"]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError(28, "No space left on device")

    torch.save = full_disk
    try:
        proc = _in_process(synth_main, [*argv, "--seed", "2", "--save-latents", str(d / "late" / "l.pt")], capsys)
    finally:
        torch.save = real_save
    assert_user_error(proc, "l.pt: cannot write --save-latents (No space left on device)")
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.png"]


@pytest.fixture
def dataset(tmp_path):
    """A folder data set of one sample, and an ADE20K one whose instances/ is a file (unwritable output)."""
    root = tmp_path / "ds"
    for sub in ("labels", "images"):
        (root / sub).mkdir(parents=True)
    write_index_map(root / "labels" / "a.png", np.zeros((16, 16), np.uint8))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "images" / "a.png")
    ade = tmp_path / "ade"
    for sub in ("images/training", "annotations/training"):
        (ade / sub).mkdir(parents=True)
    write_index_map(ade / "annotations" / "training" / "x.png", np.ones((16, 16), np.uint8))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(ade / "images" / "training" / "x.jpg")
    (ade / "instances").write_text("a file where the instance maps' folder goes")
    return tmp_path


PREPARE_CASES = [
    ("no-dataset", "{t}/ds", "--dataset"),
    ("dataset-unknown", "{t}/ds --dataset banana", "--dataset"),
    ("phase-unknown", "{t}/ds --dataset folder --phase banana", "--phase"),
    ("dataroot-missing", "{t}/none --dataset folder", "dataroot {t}/none is not a folder"),
    ("dataroot-a-file", "{t}/ds/images/a.png --dataset folder", "is not a folder"),
    ("layout-missing", "{t}/ds --dataset ade20k", "images/training"),
    ("image-other-size", "{t}/ds --dataset folder --phase train", "images/a.png: an image is 16x24 (HxW) but its label map"),
    ("image-bomb", "{t}/ds --dataset folder --phase train", "images/a.png: refused to decode"),
    ("label-jpeg", "{t}/ds --dataset folder --phase train", "b.jpg: label and instance maps must be lossless"),
    ("output-unwritable", "{t}/ade --dataset ade20k --phase train",
     "{t}/ade/instances/training/x.png: cannot write the map (Not a directory)"),
]


@pytest.mark.parametrize("argv,needle", [c[1:] for c in PREPARE_CASES], ids=[c[0] for c in PREPARE_CASES])
def test_prepare_user_errors(argv, needle, dataset, request, capsys):
    case = request.node.callspec.id
    images = dataset / "ds" / "images"
    if case == "image-other-size":
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(images / "a.png")
    elif case == "image-bomb":
        png_claiming(images / "a.png", 65535, 65535)
    elif case == "label-jpeg":
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(dataset / "ds" / "labels" / "b.jpg")
    assert_user_error(_in_process(prepare_main, argv.format(t=dataset).split(), capsys), needle.format(t=dataset))


@pytest.mark.parametrize("program,argv,needle", [
    ("inade.cli", "random --checkpoint {d}/ck.pt --label {d}/bomb.png --out {d}/out/o.png", "bomb.png: refused to decode"),
    ("inade.data.prepare", "{d} --dataset banana", "--dataset"),
], ids=["synth-bomb-header", "prepare-dataset-unknown"])
def test_user_errors_of_the_programs_a_user_starts(program, argv, needle, d):
    proc = run_cli(["-W", "error::UserWarning:PIL", "-m", program, *argv.format(d=d).split()], timeout=120)
    line = assert_user_error(proc, needle.format(d=d))
    assert "DecompressionBomb" not in proc.stderr.decode() and len(line) < 400
    assert not (d / "out").exists()
