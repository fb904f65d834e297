"""INADENorm and the index-map helpers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICE
from inade.nn import INADENorm, instance_classes, instance_parts, resize_index_map
from inade.ops import use_backend


@pytest.mark.parametrize("src", [(1, 1), (3, 5), (8, 8), (17, 33), (64, 128), (257, 100)], ids=str)
@pytest.mark.parametrize("dst", [(1, 1), (2, 4), (4, 8), (13, 7), (16, 32), (128, 256), (512, 33)], ids=str)
def test_resize_index_map_is_bit_identical_to_interpolate_nearest(src, dst):
    index = torch.randint(0, 5000, (2, *src), generator=torch.Generator().manual_seed(0))
    want = F.interpolate(index[:, None].float(), dst, mode="nearest")[:, 0].long()
    assert torch.equal(resize_index_map(index, dst), want)


def test_instance_classes_gives_each_instance_its_class():
    label = torch.tensor([[[3, 3, 1], [3, 0, 1]]])
    inst = torch.tensor([[[0, 0, 2], [0, 1, 2]]])
    assert instance_classes(label, inst, num_instances=4).tolist() == [[3, 0, 1, 0]]


def test_instance_classes_rejects_instance_spanning_two_classes():
    label = torch.tensor([[[3, 3], [2, 1]]])
    inst = torch.tensor([[[0, 0], [0, 1]]])
    with pytest.raises(ValueError, match="instance 0 of image 0 spans classes 2 and 3"):
        instance_classes(label, inst)


def official_style_norm(norm: INADENorm, x, label, inst, noise):
    """The public code's computation, restated densely: one-hot class and instance maps
    and einsums to per-pixel maps (our own code, the approach of tzt101/INADE)."""
    seg = F.one_hot(label, norm.weight.shape[0]).permute(0, 3, 1, 2).to(x.dtype)
    ins = F.one_hot(inst, noise.shape[1]).permute(0, 3, 1, 2).to(x.dtype)
    mapped = norm.fc_noise(noise)
    normalized = norm.param_free_norm(x)
    out = []
    for k in range(2):
        a = torch.einsum("mc,bmhw->bchw", norm.weight[..., k], seg)
        b = torch.einsum("mc,bmhw->bchw", norm.bias[..., k], seg)
        n = torch.einsum("blc,blhw->bchw", mapped[:, :, k], ins)
        out.append(a * n + b)
    return out[0] * normalized + out[1]


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_norm_computes_the_public_codes_function(backend, training):
    torch.manual_seed(0)
    B, C, H, W, L, M, N = 2, 6, 5, 7, 4, 5, 3
    norm = INADENorm(C, M, N).to(DEVICE)
    with torch.no_grad():
        norm.param_free_norm.running_mean.normal_()
        norm.param_free_norm.running_var.uniform_(0.5, 2)
    twin = INADENorm(C, M, N).to(DEVICE)
    twin.load_state_dict(norm.state_dict())
    norm.train(training), twin.train(training)
    inst = torch.randint(0, L, (B, H, W), device=DEVICE)
    cls = torch.randint(0, M, (B, L), device=DEVICE)
    label = torch.gather(cls, 1, inst.flatten(1)).view(B, H, W)
    x = torch.randn(B, C, H, W, device=DEVICE)
    noise = torch.randn(B, L, 2, N, device=DEVICE)
    with use_backend(backend):
        y = norm(x, inst, instance_classes(label, inst, L), noise)
    want = official_style_norm(twin, x, label, inst, noise)
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm.state_dict(), twin.state_dict())
    # gradients reach every parameter the same way
    g_ours = torch.autograd.grad(y.square().sum(), [norm.weight, norm.bias, norm.fc_noise.weight])
    g_want = torch.autograd.grad(want.square().sum(), [twin.weight, twin.bias, twin.fc_noise.weight])
    for a, b in zip(g_ours, g_want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_norm_initialisation_and_keys_follow_the_public_code():
    norm = INADENorm(16, 19, 64)
    assert set(norm.state_dict()) == {
        "weight", "bias", "param_free_norm.running_mean", "param_free_norm.running_var",
        "param_free_norm.num_batches_tracked", "fc_noise.weight", "fc_noise.bias",
    }
    assert norm.weight.shape == (19, 16, 2) and (norm.bias == 0).all()
    assert 0 <= norm.weight.min() and norm.weight.max() < 1 and norm.weight.std() > 0.2


def test_norm_rejects_noise_of_the_wrong_shape():
    norm = INADENorm(4, 3, 2)
    x, inst, cls = torch.randn(1, 4, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="noise must be"):
        norm(x, inst, cls, torch.randn(1, 1, 3))


def test_instance_classes_op_checks_values_inside_the_custom_op():
    """The value checks run in inade::instance_classes (so torch.compile traces callers):
    opcheck passes, and label range, id range and extra rows are refused there."""
    label = torch.tensor([[[3, 3, 1], [3, 0, 1]]])
    inst = torch.tensor([[[0, 0, 2], [0, 1, 2]]])
    torch.library.opcheck(torch.ops.inade.instance_classes.default, (label, inst, 3, 4, True, ""))
    assert instance_classes(label, inst, 3, num_classes=4, exact=True).tolist() == [[3, 0, 1]]
    with pytest.raises(ValueError, match=r"label has classes in \[0, 3\] but the model has num_classes=3 \(hint\)"):
        instance_classes(label, inst, 3, num_classes=3, hint=" (hint)")
    with pytest.raises(ValueError, match="the noise has 5 instance rows but inst has ids 0 ... 2"):
        instance_classes(label, inst, 5, exact=True)
    assert instance_classes(label, inst, 5).shape == (1, 5)  # extra rows are fine without exact
    with pytest.raises(ValueError, match="has id 2 but num_instances is 2"):
        instance_classes(label, inst, 2)


@pytest.mark.parametrize("table", ["dense", "sparse"])
def test_instance_parts_numbers_class_pure_parts_and_keeps_pure_maps(table, monkeypatch):
    """inade::instance_parts: a map whose ids each lie in one class comes back as it is (gaps
    included, P = L); an id over several classes keeps its number for its smallest class and its
    other parts get L, L+1, … per image, each naming its id and class. Both ways of finding the
    (id, class) pairs (a dense table, the sorted keys) give the same parts."""
    import inade.nn.index_maps as index_maps  # noqa: PLC0415

    if table == "sparse":
        monkeypatch.setattr(index_maps, "_DENSE_PARTS", 0)
    g = torch.Generator().manual_seed(0)
    rand_label, rand_inst = torch.randint(0, 9, (3, 12, 10), generator=g), torch.randint(0, 7, (3, 12, 10), generator=g)
    parts, part_inst, part_cls = instance_parts(rand_label, rand_inst)
    assert torch.equal(part_inst.gather(1, parts.flatten(1)).view_as(parts), rand_inst)
    assert torch.equal(part_cls.gather(1, parts.flatten(1)).view_as(parts), rand_label)
    for b in range(3):  # one part per (id, class) pair present, numbered 0 … P_b - 1 (ids 0 … 6 all present)
        pairs = {(i, c) for i, c in zip(rand_inst[b].flatten().tolist(), rand_label[b].flatten().tolist())}
        assert sorted(parts[b].unique().tolist()) == list(range(len(pairs)))
    if table == "dense":
        want = (parts, part_inst, part_cls)
        monkeypatch.setattr(index_maps, "_DENSE_PARTS", 0)
        for x, y in zip(instance_parts(rand_label, rand_inst), want):
            assert torch.equal(x, y)
        monkeypatch.undo()
    label = torch.tensor([[[3, 3, 1], [3, 0, 1]], [[2, 2, 2], [2, 2, 2]]])
    pure = torch.tensor([[[0, 0, 3], [0, 1, 3]], [[1, 1, 1], [1, 1, 1]]], dtype=torch.int32)
    parts, part_inst, part_cls = instance_parts(label, pure, 4, num_classes=4, exact=True)
    assert parts.dtype == torch.int32 and torch.equal(parts, pure)
    assert part_inst.tolist() == [[0, 1, 2, 3]] * 2 and part_cls.tolist() == [[3, 0, 0, 1], [0, 2, 0, 0]]
    mixed = torch.tensor([[[0, 0, 0], [0, 1, 0]], [[1, 1, 0], [0, 0, 1]]])  # image 0: id 0 over 3 and 1
    label[1, 0, 0] = 0  # image 1: id 1 over classes 0 and 2
    parts, part_inst, part_cls = instance_parts(label, mixed)
    assert parts.dtype == torch.long and parts.tolist() == [[[2, 2, 0], [2, 1, 0]], [[1, 2, 0], [0, 0, 2]]]
    assert part_inst.tolist() == [[0, 1, 0], [0, 1, 1]] and part_cls.tolist() == [[1, 0, 3], [2, 0, 2]]
    torch.library.opcheck(torch.ops.inade.instance_parts.default, (label, mixed, 2, 4, True, ""))
    with pytest.raises(ValueError, match=r"label has classes in \[0, 3\] but the model has num_classes=3"):
        instance_parts(label, mixed, num_classes=3)
    with pytest.raises(ValueError, match="the noise has 3 instance rows but inst has ids 0 ... 1"):
        instance_parts(label, mixed, 3, exact=True)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 16, 1, 1), (1, 4, 8, 6)], ids=str)
def test_upsample_nearest2x_is_interpolate(shape):
    from inade.nn import upsample_nearest2x  # noqa: PLC0415

    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    want = F.interpolate(x, scale_factor=2, mode="nearest")
    got = upsample_nearest2x(x)
    assert torch.equal(got, want)
    dy = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(got, x, dy)[0], torch.autograd.grad(want, x, dy)[0],
                               rtol=1e-15, atol=1e-15)  # the four terms add in another order
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    assert upsample_nearest2x(cl).is_contiguous(memory_format=torch.channels_last) or shape[2] * shape[3] == 1
