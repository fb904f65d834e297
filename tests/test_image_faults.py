"""Hostile image and map files: every reader checks the header before it decodes anything.

A PNG of one colour is tiny whatever its size (6000x6000 is ~100 KB, a patched header
can claim 65535x65535), so sizes are refused from the header alone: the tests spy on
Pillow's decoding (``load`` / ``convert``) and fail if it is ever reached. Maps must be
lossless: JPEG and lossy WebP change ids at edges.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from inade.data import DatasetError, PairedDataset, read_image, read_index_map, read_label_map
from inade.data.folders import Sample, dataset_files
from inade.data.images import MAX_PIXELS, image_size
from inade.metrics.images import batches, check_same_sizes, list_images, load_image
from inade.metrics.weights import MetricsError


def _small_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


SMALL_PNG = _small_png()


def png_claiming(path, width: int, height: int):
    """A valid 8x8 greyscale PNG whose IHDR says ``width x height`` (CRC fixed): a header-only bomb."""
    data = SMALL_PNG
    ihdr = struct.pack(">II", width, height) + data[24:29]  # width, height, then depth/colour/... as they were
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(data[:16] + ihdr + crc + data[33:])
    return path


@pytest.fixture(scope="module")
def big_png(tmp_path_factory):
    """A 6000x6000 PNG of one colour: 36 M pixels (2.2x MAX_PIXELS) in a file of ~50 KB."""
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.new("L", (6000, 6000), 3).save(path)
    assert path.stat().st_size < 200_000 and 6000 * 6000 > MAX_PIXELS
    return path


@pytest.fixture
def no_decode(monkeypatch):
    """Fail the test if Pillow decodes any pixel data (the checks must come from the header)."""
    def decoded(self, *args, **kwargs):
        raise AssertionError(f"{getattr(self, 'filename', self)} was decoded before the size check")

    for cls in (Image.Image, ImageFile.ImageFile):
        monkeypatch.setattr(cls, "load", decoded)
    monkeypatch.setattr(Image.Image, "convert", decoded)


READERS = {
    "read_image": read_image,
    "read_index_map": read_index_map,
    "read_label_map": lambda p: read_label_map(p, label_nc=5),
    "image_size": image_size,
    "metrics.load_image": load_image,
}


@pytest.mark.parametrize("reader", list(READERS), ids=list(READERS))
def test_a_small_file_of_a_huge_image_is_refused_before_decoding(reader, big_png, no_decode):
    with pytest.raises((DatasetError, MetricsError)) as err:
        READERS[reader](big_png)
    msg = str(err.value)
    assert msg.startswith(str(big_png)) and "6000x6000" in msg and "MAX_PIXELS" in msg


@pytest.fixture
def map_64x48(tmp_path):
    path = tmp_path / "m.png"
    Image.new("L", (48, 64)).save(path)
    return path


@pytest.mark.parametrize("reader", ["read_image", "read_index_map", "read_label_map"])
def test_an_expected_size_is_checked_before_decoding(reader, map_64x48, no_decode):
    path = map_64x48
    read = {"read_image": read_image, "read_index_map": read_index_map,
            "read_label_map": lambda p, **k: read_label_map(p, label_nc=5, **k)}[reader]
    with pytest.raises(DatasetError, match=r"m\.png: .* is 64x48 \(HxW\) but the model's output is 32x32"):
        read(path, size=(32, 32), size_of="the model's output")


@pytest.mark.parametrize("side", [65535, 10000], ids=["65535-pillow-error", "10000-pillow-warning"])
def test_a_decompression_bomb_header_is_one_error_and_no_warning(side, tmp_path, no_decode):
    """65535² is past Pillow's error limit, 10000² past its warning limit: both one DatasetError, no warning."""
    bomb = png_claiming(tmp_path / "bomb.png", side, side)
    assert bomb.stat().st_size < 100
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for reader in (read_image, read_index_map, image_size):
            with pytest.raises(DatasetError) as err:
                reader(bomb)
            assert str(err.value).startswith(f"{bomb}: ") and "\n" not in str(err.value)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def _save(path, fmt, **options):
    ids = np.zeros((16, 16), np.uint8)
    ids[4:12, 4:12] = 3
    Image.fromarray(np.repeat(ids[..., None], 3, 2)).save(path, format=fmt, **options)
    return path


@pytest.mark.parametrize("fmt,options,name", [
    ("JPEG", {"quality": 100}, "JPEG"),
    ("WEBP", {"lossless": False, "quality": 100}, "lossy WebP"),
    ("TIFF", {"compression": "jpeg"}, "JPEG-compressed TIFF"),
], ids=["jpeg", "webp-lossy", "tiff-jpeg"])
def test_a_lossy_map_is_refused_with_the_reason(fmt, options, name, tmp_path):
    path = _save(tmp_path / "map.bin", fmt, **options)  # the extension does not matter: the header does
    for read in (read_index_map, lambda p: read_label_map(p, label_nc=5)):
        with pytest.raises(DatasetError, match=f"map.bin: label and instance maps must be lossless \\(PNG\\): {name} "
                                               "changes class ids at edges"):
            read(path)
    assert read_image(path).shape == (16, 16, 3)  # as a photograph it reads


@pytest.mark.parametrize("fmt,options", [("PNG", {}), ("WEBP", {"lossless": True}), ("BMP", {})],
                         ids=["png", "webp-lossless", "bmp"])
def test_a_lossless_map_reads(fmt, options, tmp_path):
    ids = read_index_map(_save(tmp_path / "map.bin", fmt, **options))
    assert ids.shape == (16, 16) and sorted(np.unique(ids).tolist()) == [0, 3]


def _folder(root, label_hw=(16, 16), image_hw=(16, 16), inst_hw=None):
    for d in ("labels", "images") + (("instances",) if inst_hw else ()):
        (root / d).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(label_hw, np.uint8)).save(root / "labels" / "a.png")
    Image.fromarray(np.zeros((*image_hw, 3), np.uint8)).save(root / "images" / "a.png")
    if inst_hw is not None:
        Image.fromarray(np.zeros(inst_hw, np.uint8)).save(root / "instances" / "a.png")
    return root


@pytest.mark.parametrize("case", ["image", "instance", "none-mode"])
def test_a_folder_data_set_of_another_size_names_the_file(case, tmp_path):
    root = _folder(tmp_path, image_hw=(16, 24) if case == "image" else (16, 16),
                   inst_hw=(8, 16) if case == "instance" else None)
    files = dataset_files("folder", root, "train")
    mode = "none" if case == "none-mode" else "resize_and_crop"
    ds = PairedDataset(files, label_nc=3, size=(32, 32), load_size=32, preprocess_mode=mode, flip=False)
    bad, message = {
        "image": ("images/a.png", "an image is 16x24 (HxW) but its label map"),
        "instance": ("instances/a.png", "a label/instance map is 8x16 (HxW) but its label map"),
        "none-mode": ("labels/a.png", "is 16x16 (HxW) but the output size (preprocess_mode='none') is 32x32"),
    }[case]
    with pytest.raises(DatasetError) as err:
        ds[0]
    assert str(err.value).startswith(str(root / bad)) and message in str(err.value)


def test_a_jpeg_among_the_label_maps_is_refused_not_ignored(tmp_path):
    root = _folder(tmp_path)
    _save(root / "labels" / "b.jpg", "JPEG")
    with pytest.raises(DatasetError, match="b.jpg: label and instance maps must be lossless"):
        dataset_files("folder", root, "train")


def test_images_of_mixed_sizes_in_a_metrics_folder_name_the_file(tmp_path, monkeypatch):
    for name, hw in (("a.png", (16, 16)), ("b.png", (16, 16)), ("c.png", (16, 20))):
        Image.fromarray(np.zeros((*hw, 3), np.uint8)).save(tmp_path / name)
    files = list_images(tmp_path)
    assert [len(b) for b in batches(files[:2], 1)] == [1, 1]
    with pytest.raises(MetricsError, match=r"c\.png: image is 16x20 \(HxW\) but .*a\.png, the first image, is 16x16"):
        list(batches(files, 2))
    png_claiming(tmp_path / "b.png", 65535, 65535)
    with pytest.raises(MetricsError, match="b.png: refused to decode"):
        check_same_sizes([tmp_path / "b.png"], files)


def test_a_sample_with_a_bomb_image_fails_before_decoding_it(tmp_path):
    """The label map is decoded (it is small); the image's header alone is refused."""
    root = _folder(tmp_path)
    png_claiming(root / "images" / "a.png", 65535, 65535)
    ds = PairedDataset([Sample(root / "labels" / "a.png", root / "images" / "a.png", None)], label_nc=3,
                       size=(16, 16), load_size=16, flip=False)
    with pytest.raises(DatasetError, match="images/a.png: refused to decode it as an image"):
        ds[0]


# --- negative ids (issue 25) ---------------------------------------------------------------------


def _negative_tiff(path, hw=(16, 16)):
    """A 32-bit signed TIFF (Pillow mode I) whose instance map says -1 where there is none."""
    ids = np.zeros(hw, np.int32)
    ids[2:6, 3:7] = -1
    Image.fromarray(ids).save(path, format="TIFF")
    assert Image.open(path).mode == "I"
    return path


def test_a_negative_id_is_one_error_naming_the_file(tmp_path):
    path = _negative_tiff(tmp_path / "inst.tif")
    with pytest.raises(DatasetError, match=r"inst\.tif: .*negative id -1"):
        read_index_map(path)
    root = _folder(tmp_path / "set")
    (root / "instances").mkdir()
    _negative_tiff(root / "instances" / "a.png")  # (a TIFF by its content: the loader pairs files by name)
    ds = PairedDataset(dataset_files("folder", root, "train"), label_nc=3, size=(16, 16), load_size=16, flip=False)
    with pytest.raises(DatasetError, match=r"instances/a\.png: .*negative id -1"):
        ds[0]


def test_inade_synth_names_a_map_with_a_negative_id(tmp_path, capsys):
    """Was a ValueError traceback from compact_ids."""
    import subprocess  # noqa: PLC0415

    import torch  # noqa: PLC0415

    import inade  # noqa: PLC0415
    from _cli import assert_user_error  # noqa: PLC0415
    from inade.cli import main as synth_main  # noqa: PLC0415

    cfg = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32)
    torch.save({"G": inade.Generator(cfg).state_dict(), "config": cfg.to_dict()}, tmp_path / "ck.pt")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "label.png")
    inst = _negative_tiff(tmp_path / "inst.tif", (32, 32))
    argv = ["random", "--checkpoint", str(tmp_path / "ck.pt"), "--label", str(tmp_path / "label.png"),
            "--inst", str(inst), "--out", str(tmp_path / "out.png")]
    code = synth_main(argv)
    err = capsys.readouterr().err
    assert_user_error(subprocess.CompletedProcess(argv, code, "", err), f"{inst}: ", "negative id -1")
    assert not (tmp_path / "out.png").exists()
