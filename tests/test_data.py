"""Data: the synthetic scenes, compact ids, the image and map files (one rule for RGB, 16-bit
and palette maps), each real layout on a tiny fabricated copy, the resumable sampler, the
prepare tool, and the errors a user sees."""
from __future__ import annotations

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import inade  # noqa: E402
from inade.data import (  # noqa: E402
    DatasetError,
    EpochSampler,
    SyntheticScenes,
    build_dataset,
    cityscapes_class,
    compact_ids,
    read_image,
    read_index_map,
    read_label_map,
    spanning_ids,
    spans_classes,
    write_image,
    write_index_map,
)
from inade.utils.errors import UserError  # noqa: E402
from inade.data.prepare import prepare  # noqa: E402
from inade.data.synthetic import COLOR_MEAN, COLOR_STD, STUFF_CLASSES, THING_CLASSES  # noqa: E402

# ---------------------------------------------------------------------------
# synthetic scenes
# ---------------------------------------------------------------------------


def test_synthetic_is_deterministic_given_seed():
    a, b = SyntheticScenes(8, seed=3), SyntheticScenes(8, seed=3)
    for i in range(8):
        x, y = a[i], b[i]
        for k in ("label", "instance", "image"):
            assert torch.equal(x[k], y[k]), (i, k)
    assert not torch.equal(SyntheticScenes(8, seed=4)[0]["image"], a[0]["image"])
    assert not torch.equal(SyntheticScenes(8, seed=3, phase="test")[0]["image"], a[0]["image"])


def test_synthetic_sample_shapes_and_ranges():
    ds = SyntheticScenes(4, crop_size=48, aspect_ratio=1.5)
    s = ds[1]
    assert s["label"].shape == s["instance"].shape == (32, 48)
    assert s["label"].dtype == s["instance"].dtype == torch.int64
    assert s["image"].shape == (3, 32, 48) and s["image"].dtype == torch.float32
    assert -1 <= s["image"].min() and s["image"].max() <= 1
    assert 0 <= s["label"].min() and s["label"].max() < ds.label_nc


def test_synthetic_instances_are_compact_and_class_pure():
    ds = SyntheticScenes(32)
    n_things = 0
    for i in range(32):
        s = ds.scene(i)
        ids = s.instance.unique()
        assert torch.equal(ids, torch.arange(len(ids))), "instance ids must be 0 ... L-1"
        assert sorted(s.colors) == ids.tolist() and sorted(s.classes) == ids.tolist()
        for l, cls in s.classes.items():
            assert s.label[s.instance == l].unique().tolist() == [cls]
        stuff = [c for c in s.classes.values() if c in STUFF_CLASSES]
        assert len(stuff) == len(set(stuff)), "one instance per stuff class"
        n_things += sum(c in THING_CLASSES for c in s.classes.values())
    assert n_things >= 2 * 32, "several object instances per scene on average"


def test_synthetic_true_colours_are_the_instance_means():
    """The recorded colour is what the pixels show (texture and noise average out)."""
    ds = SyntheticScenes(8)
    for i in range(8):
        s = ds.scene(i)
        for l, color in s.colors.items():
            mean = s.image[:, s.instance == l].mean(1)
            assert torch.allclose(mean, color, atol=0.06), (i, l, mean, color)


def test_synthetic_colours_follow_the_class_distribution():
    ds = SyntheticScenes(400)
    per_class = {c: [] for c in range(6)}
    for i in range(400):
        s = ds.scene(i)
        for l, c in s.classes.items():
            per_class[c].append(s.colors[l])
    for c in (0, 1, 3, 4):  # classes whose clipping at +-0.9 is rare
        x = torch.stack(per_class[c]).double()
        assert len(x) > 100
        assert torch.allclose(x.mean(0), torch.tensor(COLOR_MEAN[c]), atol=0.04), c
        assert torch.allclose(x.std(0), torch.tensor(COLOR_STD[c]), rtol=0.25), c


def test_synthetic_config_agrees_with_dataset():
    cfg = inade.config("synthetic")
    ds = build_dataset(cfg, synthetic_size=4)
    assert cfg.label_nc == ds.label_nc and not cfg.contain_dontcare_label
    assert ds[0]["image"].shape[1:] == cfg.output_size


# ---------------------------------------------------------------------------
# compact ids
# ---------------------------------------------------------------------------


def test_compact_ids_cityscapes_raw_ids():
    raw = np.array([[7, 7, 26001, 26001], [7, 24000, 26002, 26001], [11, 11, 24000, 26002]])
    label = cityscapes_class(raw)
    assert label.tolist() == [[7, 7, 26, 26], [7, 24, 26, 26], [11, 11, 24, 26]]
    ids, raw_of = compact_ids(raw)
    assert ids.tolist() == [[0, 0, 3, 3], [0, 2, 4, 3], [1, 1, 2, 4]]
    assert raw_of.tolist() == [7, 11, 24000, 26001, 26002]
    ids2, raw2 = compact_ids(torch.as_tensor(raw))
    assert isinstance(ids2, torch.Tensor) and torch.equal(ids2, torch.as_tensor(ids)) and raw2.tolist() == raw_of.tolist()


def test_compact_ids_keeps_a_raw_id_spanning_classes_whole():
    """The public code's meaning: one instance per raw id, whatever classes it covers."""
    inst = np.array([[0, 0, 0], [0, 7, 7]])  # COCO-like: 0 for all stuff
    label = np.array([[5, 5, 9], [9, 1, 1]])
    ids, raw_of = compact_ids(inst)
    assert ids.tolist() == [[0, 0, 0], [0, 1, 1]] and raw_of.tolist() == [0, 7]
    assert spanning_ids(ids, label) == {0: [5, 9]} and spans_classes(torch.as_tensor(ids), torch.as_tensor(label))
    assert spanning_ids(label, label) == {} and not spans_classes(ids, ids)
    with pytest.raises(TypeError):  # the old (inst, label) split rule is gone, loudly
        compact_ids(inst, label)


def test_compact_ids_keeps_compact_maps_and_rejects_bad_input():
    ids = torch.tensor([[0, 1], [2, 1]])
    out, _ = compact_ids(ids)
    assert torch.equal(out, ids)
    with pytest.raises(TypeError, match="integer"):
        compact_ids(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="negative"):
        compact_ids(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="shape"):
        spanning_ids(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))


# ---------------------------------------------------------------------------
# image and map files (Pillow)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("top, bits", [(200, 8), (26005, 16)], ids=["8bit", "16bit"])
def test_index_map_round_trip(tmp_path, top, bits):
    ids = (np.arange(35).reshape(5, 7) * top // 34).astype(np.int64)
    path = write_index_map(tmp_path / "m.png", ids)
    with Image.open(path) as img:
        assert img.mode == ("L" if bits == 8 else "I;16")
    back = read_index_map(path)
    assert back.dtype == np.int64 and np.array_equal(back, ids)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"], "no temporary file left behind"
    with pytest.raises(ValueError, match="0 ... 65535"):
        write_index_map(tmp_path / "n.png", np.array([[70000]]))


def test_index_map_palette_gives_indices_not_colours(tmp_path):
    idx = (np.arange(24).reshape(4, 6) % 5).astype(np.uint8)
    img = Image.fromarray(idx, mode="L").convert("P")
    img.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200, 90, 90, 0, 0, 90, 90] + [0] * 3 * 251)
    img.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P"
    assert np.array_equal(read_index_map(tmp_path / "p.png"), idx)


def test_index_map_rgb_is_its_first_channel(tmp_path):
    idx = (np.arange(24).reshape(4, 6) % 7).astype(np.uint8)
    grey_as_rgb = np.repeat(idx[..., None], 3, axis=2)
    Image.fromarray(grey_as_rgb).save(tmp_path / "rgb.png")
    rgba = np.concatenate([grey_as_rgb, np.arange(24, dtype=np.uint8).reshape(4, 6, 1)], axis=2)  # alpha varies
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    coded = np.stack([idx, idx * 3, np.full_like(idx, 7)], -1)  # G, B follow R: R alone decides
    Image.fromarray(coded).save(tmp_path / "coded.png")
    for name in ("rgb.png", "rgba.png", "coded.png"):
        assert np.array_equal(read_index_map(tmp_path / name), idx), name


def test_index_map_refuses_a_colour_coded_rgb_map(tmp_path):
    """A 24-bit id in R, G, B: the first channel would merge ids 0x000001 and 0x000002, so it is refused."""
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:2, :, 2], rgb[2:, :, 2] = 1, 2
    Image.fromarray(rgb).save(tmp_path / "panoptic.png")
    with pytest.raises(DatasetError, match=r"panoptic.png: an RGB map is read as its first channel.*2 colours and only 1"):
        read_index_map(tmp_path / "panoptic.png")


def test_read_image_gives_rgb_uint8_from_any_format(tmp_path):
    yy, xx = np.mgrid[0:16, 0:24]
    rgb = np.stack([xx * 10, yy * 15, (xx + yy) * 6], -1).astype(np.uint8)  # smooth: JPEG keeps it close
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=98)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.shape == (16, 24, 3) and jpg.dtype == np.uint8 and np.abs(jpg.astype(int) - rgb).mean() < 4
    assert np.array_equal(read_image(tmp_path / "grey.png"), np.repeat(rgb[..., :1], 3, axis=2))


def test_write_image_picks_the_format_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    write_image(tmp_path / "x.png", rgb)
    write_image(tmp_path / "x.jpg", rgb)
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "x.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)
    before = (tmp_path / "x.png").read_bytes()

    def failing_save(self, fp, *a, **k):
        open(fp, "wb").write(b"half an image")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        write_image(tmp_path / "x.png", np.zeros_like(rgb))
    monkeypatch.undo()
    assert (tmp_path / "x.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg", "x.png"]
    with pytest.raises(UserError, match="x.tiff2: cannot tell the image format"):
        write_image(tmp_path / "x.tiff2", rgb)


def test_bad_files_are_user_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.png"
    write_index_map(good, np.zeros((16, 16), np.uint8))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:40])
    (tmp_path / "text.png").write_text("hello")
    for reader in (read_image, read_index_map):
        for name, message in (("nope.png", "no such file"), ("text.png", "cannot read it"), ("cut.png", "cannot read it")):
            with pytest.raises(DatasetError, match=f"{name}: {message}") as info:
                reader(tmp_path / name)
            assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DatasetError, match="float.tif: a label/instance map must hold integer ids"):
        read_index_map(tmp_path / "float.tif")


def test_read_label_map_dontcare_shift_and_range(tmp_path):
    write_index_map(tmp_path / "l.png", np.array([[0, 1, 255], [2, 2, 1]]))
    assert read_label_map(tmp_path / "l.png", label_nc=3, contain_dontcare_label=True).tolist() == [[0, 1, 3], [2, 2, 1]]
    write_index_map(tmp_path / "ade.png", np.array([[0, 1, 3], [2, 2, 1]]))  # ADE20K: k stored as k + 1, 0 don't-care
    assert read_label_map(tmp_path / "ade.png", label_nc=3, shift_labels=True, contain_dontcare_label=True).tolist() == [
        [3, 0, 2], [1, 1, 0]]
    with pytest.raises(DatasetError, match="has class 254, outside 0 ... 3"):  # stored 255 under the shift
        read_label_map(tmp_path / "l.png", label_nc=3, shift_labels=True, contain_dontcare_label=True)
    with pytest.raises(DatasetError, match=r"l.png has class 3, outside 0 ... 2"):
        read_label_map(tmp_path / "l.png", label_nc=3)


# ---------------------------------------------------------------------------
# real layouts, fabricated
# ---------------------------------------------------------------------------

H, W = 32, 64


def _save_rgb(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _save_map(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint16 if arr.max() > 255 else np.uint8)).save(path)


def _label(rng, classes):
    lab = np.full((H, W), classes[0])
    lab[: H // 2, W // 2 :] = classes[1]
    lab[H // 2 :, : W // 3] = classes[2]
    return lab


def make_cityscapes(root, rng):
    for p, city in (("train", "aachen"), ("val", "lindau")):
        for k in range(2):
            stem = f"{city}_00000{k}_000019"
            lab = _label(rng, [7, 26, 24])
            inst = lab.copy()
            inst[lab == 26] = 26000 + k
            inst[lab == 24] = 24001
            inst[:2, W // 2 : W // 2 + 3] = 26005  # a second car
            _save_map(root / "gtFine" / p / city / f"{stem}_gtFine_labelIds.png", lab)
            _save_map(root / "gtFine" / p / city / f"{stem}_gtFine_instanceIds.png", inst)
            _save_rgb(root / "leftImg8bit" / p / city / f"{stem}_leftImg8bit.png", rng)


def make_ade20k(root, rng):
    for p, tag in (("training", "train"), ("validation", "val")):
        for k in range(2):
            _save_rgb(root / "images" / p / f"ADE_{tag}_0000000{k}.jpg", rng)
            _save_map(root / "annotations" / p / f"ADE_{tag}_0000000{k}.png", _label(rng, [0, 1, 150]))


def make_celeba(root, rng):  # the INADE code's layout
    for p in ("train", "test"):
        for k in range(2):
            _save_rgb(root / p / "images" / f"{k}.jpg", rng)
            _save_map(root / p / "labels" / f"{k}.png", _label(rng, [0, 1, 18]))


def make_celeba_flat(root, rng):  # train_img / train_label / val_*
    for p in ("train", "val"):
        for k in range(2):
            _save_rgb(root / f"{p}_img" / f"{k}.jpg", rng)
            _save_map(root / f"{p}_label" / f"{k}.png", _label(rng, [0, 4, 18]))


def make_deepfashion(root, rng):
    for p in ("train", "test"):
        for k in range(2):
            _save_rgb(root / f"{p}_img" / f"img_{k}.png", rng)
            _save_map(root / f"{p}_label" / f"img_{k}.png", _label(rng, [0, 3, 7]))


def make_coco(root, rng):
    for p in ("train", "val"):
        for k in range(2):
            lab = _label(rng, [150, 0, 255])
            inst = np.zeros((H, W), dtype=np.int64)
            inst[lab == 0] = 3
            _save_rgb(root / f"{p}_img" / f"00000{k}.jpg", rng)
            _save_map(root / f"{p}_label" / f"00000{k}.png", lab)
            _save_map(root / f"{p}_inst" / f"00000{k}.png", inst)


def make_folder(root, rng):
    for k in range(2):
        _save_rgb(root / "images" / f"a{k}.png", rng)
        _save_map(root / "labels" / f"a{k}.png", _label(rng, [0, 1, 2]))
        _save_map(root / "instances" / f"a{k}.png", np.arange(H * W).reshape(H, W) % 3 + 10)


# dataset_mode -> (maker, preset, overrides, expected label classes of sample 0 before cropping)
LAYOUT_CASES = {
    "cityscapes": (make_cityscapes, "cityscapes", dict(crop_size=64, load_size=64, num_upsampling_layers="normal"), {7, 24, 26}),
    "ade20k": (make_ade20k, "ade20k", dict(crop_size=32, load_size=40), {0, 149, 150}),
    "celeba": (make_celeba, "celeba", dict(crop_size=32, load_size=40), {0, 1, 18}),
    "celeba_flat": (make_celeba_flat, "celeba", dict(crop_size=32, load_size=32), {0, 4, 18}),
    "deepfashion": (make_deepfashion, "deepfashion", dict(crop_size=32, load_size=32), {0, 3, 7}),
    "coco": (make_coco, "cocostuff", dict(crop_size=32, load_size=40), {0, 150, 182}),
    "folder": (make_folder, "celeba", dict(dataset_mode="custom", label_nc=3, crop_size=32, load_size=32), {0, 1, 2}),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
@pytest.mark.parametrize("phase", ["train", "test"])
def test_layout_loads(tmp_path, case, phase):
    maker, preset, overrides, expected = LAYOUT_CASES[case]
    maker(tmp_path, np.random.default_rng(0))
    cfg = inade.config(preset, **overrides)
    ds = build_dataset(cfg, tmp_path, phase)
    assert len(ds) == 2
    s = ds[(0, 123)]
    h, w = cfg.output_size
    assert s["label"].shape == s["instance"].shape == (h, w)
    assert s["image"].shape == (3, h, w) and -1 <= s["image"].min() and s["image"].max() <= 1
    assert set(s["label"].unique().tolist()) <= expected
    ids = s["instance"].unique()
    assert torch.equal(ids, torch.arange(len(ids))), "compact ids after cropping"
    if case == "coco":  # raw ids 0 (classes 150 and don't-care) and 3 (class 0): one instance each
        assert len(ids) <= 2 and torch.equal(s["instance"] == s["instance"][s["label"] == 0][0], s["label"] == 0)
        return
    if case == "folder":  # raw ids 10, 11, 12 in turn on every row, over three classes: three instances
        assert len(ids) == 3 and spans_classes(s["instance"], s["label"])
        return
    for l in ids:  # one class per instance
        assert len(s["label"][s["instance"] == l].unique()) == 1
    # the crop and flip depend on the key's seed only
    assert torch.equal(ds[(1, 7)]["image"], ds[(1, 7)]["image"])


def test_cityscapes_keeps_cars_apart_and_classes(tmp_path):
    make_cityscapes(tmp_path, np.random.default_rng(0))
    cfg = inade.config("cityscapes", crop_size=64, load_size=64, num_upsampling_layers="normal")  # 32x64: no resizing
    s = build_dataset(cfg, tmp_path, "test")[(0, 0)]
    assert s["image"].shape[1:] == (H, W)
    label, inst = s["label"], s["instance"]
    flipped = bool(label[0, 0] != 7)
    car_ids = inst[label == 26].unique()
    assert len(car_ids) == 2, "the two cars (26000, 26005) stay two instances"
    assert inst.max() + 1 == 4 and not flipped


def test_no_instance_uses_the_label_map(tmp_path):
    make_cityscapes(tmp_path, np.random.default_rng(0))
    cfg = inade.config("cityscapes", crop_size=64, load_size=64, num_upsampling_layers="normal", no_instance=True)
    s = build_dataset(cfg, tmp_path, "test")[(0, 0)]
    assert torch.equal(s["instance"], compact_ids(s["label"])[0]), "the two cars merge into one car-class instance"


def test_ade20k_dontcare_and_shift(tmp_path):
    make_ade20k(tmp_path, np.random.default_rng(0))
    cfg = inade.config("ade20k", crop_size=64, load_size=64, aspect_ratio=2.0)
    s = build_dataset(cfg, tmp_path, "test")[(0, 0)]
    lab = s["label"]
    # stored 0 (don't-care) -> 150, stored 1 -> 0, stored 150 -> 149
    assert lab[H - 1, W - 1] == 150 and set(lab.unique().tolist()) == {0, 149, 150}
    assert torch.equal(compact_ids(lab)[0], s["instance"])


def test_flip_and_crop_follow_the_seed(tmp_path):
    make_folder(tmp_path, np.random.default_rng(0))
    cfg = inade.config("celeba", dataset_mode="custom", label_nc=3, crop_size=32, load_size=48)
    ds = build_dataset(cfg, tmp_path, "train")
    outs = {tuple(ds[(0, seed)]["image"].flatten()[:5].tolist()) for seed in range(12)}
    assert len(outs) > 2, "different seeds give different crops/flips"


def test_prepare_writes_compact_instance_maps(tmp_path):
    make_cityscapes(tmp_path / "cs", np.random.default_rng(0))
    make_ade20k(tmp_path / "ade", np.random.default_rng(0))
    assert prepare("cityscapes", tmp_path / "cs", log=lambda *a: None) == 4
    reid = read_index_map(tmp_path / "cs/gtFine/train/aachen/aachen_000000_000019_gtFine_instanceReIds.png")
    assert sorted(np.unique(reid).tolist()) == [0, 1, 2, 3]  # 7, 24001, 26000, 26005
    assert prepare("cityscapes", tmp_path / "cs", log=lambda *a: None) == 0, "kept without --overwrite"
    assert prepare("ade20k", tmp_path / "ade", log=lambda *a: None) == 4
    inst = read_index_map(tmp_path / "ade/instances/training/ADE_train_00000000.png")
    assert sorted(np.unique(inst).tolist()) == [0, 1, 2]


def test_prepare_cli(tmp_path, capsys):
    from inade.data.prepare import main

    make_celeba(tmp_path, np.random.default_rng(0))
    assert main([str(tmp_path), "--dataset", "celeba"]) == 0
    assert (tmp_path / "train" / "instances" / "0.png").exists()
    (tmp_path / "test" / "images" / "1.jpg").write_bytes(b"not a jpeg")
    assert main([str(tmp_path), "--dataset", "celeba", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "1.jpg: cannot read it as an image" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_missing_folder_is_named(tmp_path):
    cfg = inade.config("ade20k")
    with pytest.raises(DatasetError, match="images/training"):
        build_dataset(cfg, tmp_path, "train")
    with pytest.raises(DatasetError, match="is not a folder"):
        build_dataset(cfg, tmp_path / "nope", "train")


def test_missing_image_is_named(tmp_path):
    make_deepfashion(tmp_path, np.random.default_rng(0))
    (tmp_path / "train_img" / "img_1.png").unlink()
    with pytest.raises(DatasetError, match="img_1.png"):
        build_dataset(inade.config("deepfashion"), tmp_path, "train")


def test_class_spanning_ids_are_noted_once_per_data_set(tmp_path, capsys):
    """COCO-like files (raw id 0 over classes 150 and don't-care): one note line for the data set,
    not one per sample nor per dataset object; a class-pure data set says nothing."""
    make_coco(tmp_path / "coco", np.random.default_rng(0))
    cfg = inade.config("cocostuff", crop_size=32, load_size=32, no_flip=True)
    ds = build_dataset(cfg, tmp_path / "coco", "train")
    for key in (0, 1, (0, 5), 1):
        ds[key]
    build_dataset(cfg, tmp_path / "coco", "train")[0]
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and err.count("\n") == 1, err
    assert "instance id 0 covers classes 150, 182" in err and "docs/FILES.md" in err
    make_cityscapes(tmp_path / "city", np.random.default_rng(0))
    city = build_dataset(inade.config("cityscapes", crop_size=64, load_size=64, num_upsampling_layers="normal"),
                         tmp_path / "city", "train")
    city[0], city[1]
    assert capsys.readouterr().err == ""


def test_public_coco_samples_keep_raw_ids_and_their_edges(capsys):
    """The COCO-Stuff samples that ship with the public code (``INADE_PUBLIC_CODE``): after the
    loader's resize, crop and flip, two pixels share an instance exactly when they share a raw id,
    and the instance-edge map is the public ``get_edges`` of the raw map."""
    import os  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    from inade.data.transforms import plan_geometry, apply_to_index_map  # noqa: PLC0415
    from inade.models.discriminator import instance_edges  # noqa: PLC0415
    from test_models import _public_code  # noqa: PLC0415

    code = os.environ.get("INADE_PUBLIC_CODE")
    public = _public_code()
    root = os.path.join(code, "datasets", "coco_stuff")
    cfg = inade.config("cocostuff", crop_size=256, load_size=286)
    ds = build_dataset(cfg, root, "train")
    model = SimpleNamespace(ByteTensor=torch.ByteTensor)
    spanning = 0
    for i, sample in enumerate(ds.samples):
        s = ds[(i, 7 + i)]
        label = read_label_map(sample.label, label_nc=cfg.label_nc, contain_dontcare_label=True)
        g = plan_geometry(label.shape, ds.preprocess_mode, ds.size, ds.load_size, ds.flip, np.random.default_rng(7 + i))
        raw = torch.from_numpy(apply_to_index_map(read_index_map(sample.instance), g))
        assert torch.equal(s["instance"], compact_ids(raw)[0]), sample.instance
        edges = public.model.Pix2PixModel.get_edges(model, raw[None, None])
        assert torch.equal(instance_edges(s["instance"][None]), edges.float()), sample.instance
        spanning += spans_classes(s["instance"], s["label"])
    assert spanning >= len(ds) // 2, "the public samples hold ids that span classes"
    assert capsys.readouterr().err.count("note:") == 1


def test_corrupt_file_is_named(tmp_path):
    make_coco(tmp_path, np.random.default_rng(0))
    (tmp_path / "train_inst" / "000001.png").write_bytes(b"\x89PNG garbage")
    ds = build_dataset(inade.config("cocostuff", crop_size=32, load_size=32), tmp_path, "train")
    ds[0]
    with pytest.raises(DatasetError, match="000001.png"):
        ds[1]


def test_label_out_of_range_is_named(tmp_path):
    make_folder(tmp_path, np.random.default_rng(0))
    ds = build_dataset(inade.config("celeba", dataset_mode="custom", label_nc=2, crop_size=32, load_size=32), tmp_path)
    with pytest.raises(DatasetError, match=r"a0.png has class 2"):
        ds[0]


def test_unknown_dataset_mode():
    with pytest.raises(ValueError, match="dataset_mode"):
        build_dataset(inade.config("celeba", dataset_mode="imagenet"), "/tmp")


# ---------------------------------------------------------------------------
# sampler
# ---------------------------------------------------------------------------


def test_sampler_ranks_split_the_global_batch():
    one = list(EpochSampler(20, batch_size=4, seed=1))
    r0 = list(EpochSampler(20, batch_size=2, seed=1, rank=0, world_size=2))
    r1 = list(EpochSampler(20, batch_size=2, seed=1, rank=1, world_size=2))
    assert len(one) == len(r0) + len(r1) == 20
    for b in range(5):
        assert one[4 * b : 4 * b + 4] == r0[2 * b : 2 * b + 2] + r1[2 * b : 2 * b + 2]


def test_sampler_resumes_mid_epoch_and_changes_with_epoch():
    s = EpochSampler(24, batch_size=4, seed=5)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_batch=2)
    assert list(s) == full[8:] and len(s) == 16
    s.set_epoch(4)
    assert list(s) != full
    assert sorted(i for i, _ in full) == list(range(24))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        EpochSampler(3, batch_size=2, world_size=2)


@pytest.mark.parametrize("size", [(375, 500), (427, 640), (640, 427), (333, 1000), (300, 300)])
def test_scale_modes_size_like_the_public_code(size):
    """scale_width[_and_crop] and scale_shortside[_and_crop] resize to the public code's sizes: the
    scaled side exactly, the other rounded down (its int(target * H / W))."""
    from inade.data.transforms import plan_geometry  # noqa: PLC0415

    H, W = size
    rng = np.random.default_rng(0)
    assert plan_geometry(size, "scale_width_and_crop", (256, 256), 286, False, rng).resize == (
        max(256, int(286 * H / W)), 286)
    short, long = min(H, W), max(H, W)
    want = (286, int(286 * long / short))
    assert plan_geometry(size, "scale_shortside_and_crop", (256, 256), 286, False, rng).resize == (
        want[::-1] if W == short else want)


def test_files_are_listed_in_the_public_codes_natural_order(tmp_path):
    """The public code lists a data set's files in natural order (``util.natural_sort``):
    ``img2`` before ``img10``, so an epoch's samples (and --serial_batches) follow it."""
    from inade.data.folders import dataset_files  # noqa: PLC0415

    rng = np.random.default_rng(0)
    stems = ["img10", "img2", "img1", "img02b"]
    for stem in stems:
        _save_rgb(tmp_path / "images" / f"{stem}.png", rng)
        _save_map(tmp_path / "labels" / f"{stem}.png", _label(rng, [0, 1, 2]))
    names = [s.label.stem for s in dataset_files("folder", tmp_path)]
    assert names == ["img1", "img2", "img02b", "img10"]
