"""instance_avg_pool (paper Eq. 4) against its reference, every backend, forward and backward."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from conftest import (
    DEVICE,
    SHAPES,
    assert_close,
    assert_compiled_matches_eager,
    assert_double_backward_raises,
    assert_within_twice_torch_error,
    degenerate_map,
    gradcheck,
    needs_triton,
    shape_id,
)
from inade.ops import instance_avg_pool, reference, use_backend


def index_map(B, H, W, L, kind="pixels", seed=0, high=None):
    """Instance ids ``[B, H, W]``: independent per pixel (``pixels``: runs of length ~1)
    or blocks of a coarse map resized with nearest (``regions``: long runs, like real maps)."""
    g = torch.Generator().manual_seed(seed)
    high = high or L
    if kind == "pixels":
        return torch.randint(0, high, (B, H, W), generator=g).to(DEVICE)
    coarse = torch.randint(0, high, (B, 1, max(1, H // 3), max(1, W // 4)), generator=g)
    return F.interpolate(coarse.float(), size=(H, W), mode="nearest")[:, 0].long().to(DEVICE)


def make_inputs(shape, dtype=torch.float32, layout="contiguous", kind="pixels", seed=0):
    B, C, H, W, L = shape
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, C, H, W, generator=g) * 3 + 1.5).to(DEVICE, dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(B, C, H, 2 * W, generator=g).to(DEVICE, dtype)[..., ::2]
    inst = index_map(B, H, W, L, kind, seed)
    dy = torch.randn(B, L, C, generator=g).to(DEVICE, dtype)
    return x, inst, dy


def run(backend, x, inst, num_instances, dy):
    """The pooled table and the gradient of the map after one call."""
    x = x.detach().clone().requires_grad_()
    with use_backend(backend):
        out = instance_avg_pool(x, inst, num_instances)
    out.backward(dy)
    return out.detach(), x.grad


def reference_run(x, inst, num_instances, dy):
    """The reference in float64."""
    return run("reference", x.double(), inst, num_instances, dy.double())


# L = 40 besides SHAPES' 1..143: the C++ backward's table in four registers (33..64 entries).
@pytest.mark.parametrize("kind", ["pixels", "regions"])
@pytest.mark.parametrize("shape", [*SHAPES, (2, 11, 7, 45, 40)], ids=shape_id)
def test_matches_reference_float32(backend, shape, kind):
    x, inst, dy = make_inputs(shape, kind=kind)
    out, dx = run(backend, x, inst, shape[-1], dy)
    want, want_dx = reference_run(x, inst, shape[-1], dy)
    assert out.shape == (shape[0], shape[-1], shape[1]) and out.dtype == torch.float32
    assert_close(out, want, torch.float32, msg="pooled means differ")
    assert_close(dx, want_dx, torch.float32, msg="dx differs")


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64, torch.uint8], ids=str)
def test_index_dtypes(backend, index_dtype):
    x, inst, dy = make_inputs((2, 5, 6, 7, 6), kind="regions")
    got = run(backend, x, inst.to(index_dtype), 6, dy)
    want = reference_run(x, inst, 6, dy)
    for a, b in zip(got, want):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_layouts(backend, layout):
    x, inst, dy = make_inputs((2, 19, 7, 9, 5), layout=layout, kind="regions")
    out, dx = run(backend, x, inst, 5, dy)
    want, want_dx = reference_run(x, inst, 5, dy)
    assert_close(out, want, torch.float32)
    assert_close(dx, want_dx, torch.float32)
    if layout == "channels_last":
        assert dx.is_contiguous(memory_format=torch.channels_last)


def test_concatenated_maps_equal_one_at_a_time(backend):
    """Several maps pooled as one (concatenated along C, as the encoder pools its heads) give
    each map's own result (to rounding: a map's channels sit in other rows of the kernels' tiles)."""
    B, H, W, L = 2, 6, 11, 7
    maps = [make_inputs((B, c, H, W, L), seed=seed)[0] for c, seed in ((5, 1), (18, 2), (3, 3))]
    inst = degenerate_map("empty-instances", B, H, W)[0]
    dys = [torch.randn(B, L, m.shape[1], device=DEVICE) for m in maps]
    out, dx = run(backend, torch.cat(maps, 1), inst, L, torch.cat(dys, 2))
    sizes = [m.shape[1] for m in maps]
    for m, dy, part, part_dx in zip(maps, dys, out.split(sizes, 2), dx.split(sizes, 1)):
        alone, alone_dx = run(backend, m, inst, L, dy)
        assert_close(part, alone, torch.float32)
        assert_close(part_dx, alone_dx, torch.float32)


def test_one_instance_is_global_average_pooling(backend):
    inst, L = degenerate_map("one-instance", 3, 6, 9)
    x, _, dy = make_inputs((3, 7, 6, 9, L))
    out, dx = run(backend, x, inst, L, dy)
    assert_close(out, F.adaptive_avg_pool2d(x, 1).flatten(1)[:, None, :], torch.float32)
    assert_close(dx, (dy[:, 0, :, None, None] / 54).expand_as(x), torch.float32)


def test_every_pixel_its_own_instance_is_identity(backend):
    """With L = H*W and id = pixel index, the op is x reshaped to [B, HW, C] (and dx is dy reshaped)."""
    B, C, H, W = 2, 5, 4, 7
    inst, L = degenerate_map("own-instance-per-pixel", B, H, W)
    x, _, dy = make_inputs((B, C, H, W, L))
    out, dx = run(backend, x, inst, L, dy)
    torch.testing.assert_close(out, x.flatten(2).transpose(1, 2), atol=0, rtol=0)
    torch.testing.assert_close(dx, dy.transpose(1, 2).reshape(B, C, H, W), atol=0, rtol=0)


def test_empty_instances_give_zero_and_zero_gradient(backend):
    B, C, H, W = 2, 6, 5, 8
    inst, L = degenerate_map("empty-instances", B, H, W)
    x, _, _ = make_inputs((B, C, H, W, L))
    present = torch.zeros(B, L, dtype=torch.bool, device=DEVICE).scatter_(1, inst.flatten(1), True)
    assert not present[:, 4:].any() and present[:, :4].all()
    # A gradient only on the empty instances' rows reaches no pixel.
    dy = torch.randn(B, L, C, device=DEVICE) * (~present)[..., None]
    out, dx = run(backend, x, inst, L, dy)
    assert (out[~present] == 0).all() and (out[present].abs().sum(-1) > 0).all()
    assert (dx == 0).all()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=shape_id)
def test_low_precision(backend, shape, dtype, layout):
    """Within the dtype's tolerance of the float64 result, and at most 2x the error of
    PyTorch's reference run in the same dtype."""
    x, inst, dy = make_inputs(shape, dtype, layout=layout, kind="regions")
    L = shape[-1]
    ours = run(backend, x, inst, L, dy)
    exact = reference_run(x, inst, L, dy)
    torch_low = run("reference", x, inst, L, dy)
    for name, o, e in zip(("out", "dx"), ours, exact):
        assert_close(o, e, dtype, msg=f"{name} outside the {dtype} tolerance")
    assert_within_twice_torch_error(("out", "dx"), ours, torch_low, exact, dtype)


def test_gradcheck_float64(backend):
    x, inst, _ = make_inputs((2, 3, 4, 5, 4), torch.float64, kind="pixels")
    x_cl, _, _ = make_inputs((2, 2, 4, 5, 4), torch.float64, layout="channels_last", seed=1)
    with use_backend(backend):
        assert gradcheck(lambda x: instance_avg_pool(x, inst, 4), (x.requires_grad_(),))
        assert gradcheck(lambda x: instance_avg_pool(x, inst, 4), (x_cl.requires_grad_(),))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_poisoned_outputs_are_overwritten(backend, poisoned_memory, layout):
    """With every allocation full of NaN, outputs and gradients come back without NaN: every
    element is written (also the rows of instances without pixels), and no scratch is read
    before it is written."""
    x, _, dy = make_inputs((2, 37, 5, 29, 6), layout=layout)
    inst = index_map(2, 5, 29, 6, "regions", high=4)  # ids 4 and 5 have no pixel
    for t in run(backend, x, inst, 6, dy):
        assert not t.isnan().any()


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda a: a.update(x=a["x"][0]), ValueError, r"x must be \[B, C, H, W\]"),
        (lambda a: a.update(x=a["x"][:0], inst=a["inst"][:0]), ValueError, "empty batch"),
        (lambda a: a.update(inst=a["inst"][:, :-1]), ValueError, "inst has shape"),
        (lambda a: a.update(inst=a["inst"].float()), TypeError, "integer"),
        (lambda a: a.update(x=a["x"].int()), TypeError, "x must be float"),
        (lambda a: a["inst"].view(-1)[3].fill_(4), ValueError, "has id 4 but num_instances is 4"),
        (lambda a: a["inst"].view(-1)[3].fill_(-1), ValueError, "negative id"),
        (lambda a: a.update(num_instances=0), ValueError, "num_instances must be at least 1, got 0"),
        (lambda a: a.update(num_instances=4.0), TypeError, "num_instances must be an int, got float"),
        (lambda a: a.update(num_instances=True), TypeError, "num_instances must be an int, got bool"),
        (lambda a: a.update(x=(a["x"], a["x"])), TypeError, "x must be one .* concatenate them along C"),
        (lambda a: a.update(x=[a["x"]]), TypeError, "x must be one .* concatenate them along C"),
        (lambda a: a.update(x=a["x"].numpy()), TypeError, "x must be a torch.Tensor, got ndarray"),
        (lambda a: a.update(inst=a["inst"].to("meta")), ValueError, "inst is on meta"),
    ],
    ids=["x-3d", "empty-batch", "inst-shape", "inst-float", "x-int", "id-too-large", "id-negative",
         "no-instances", "num-instances-float", "num-instances-bool", "x-tuple", "x-list",
         "x-numpy", "device-mismatch"],
)
@pytest.mark.parametrize("backend_name", ["reference", "cpp", "triton"])
def test_bad_input_raises_clear_error(backend_name, mutate, error, match):
    x, inst, _ = make_inputs((2, 4, 5, 6, 4))
    args = dict(x=x, inst=inst, num_instances=4)
    mutate(args)
    with use_backend(backend_name), pytest.raises(error, match=match):
        instance_avg_pool(args["x"], args["inst"], args["num_instances"])


@pytest.mark.parametrize("backend_name", ["reference", "cpp", "triton"])
def test_custom_ops_check_ids_before_any_kernel(backend_name):
    """Called directly, the custom ops still refuse an id out of range."""
    m = importlib.import_module("inade.ops.instance_avg_pool")
    x, inst, dy = make_inputs((2, 4, 5, 6, 4))
    inst[1, 2, 3] = 9
    counts = torch.ones(2, 4, device=DEVICE)
    with use_backend(backend_name):
        with pytest.raises(ValueError, match="has id 9 but num_instances is 4"):
            m.instance_avg_pool_forward(x, inst, 4)
        with pytest.raises(ValueError, match="has id 9 but num_instances is 4"):
            m.instance_avg_pool_backward(dy, inst, counts, False)


def test_forward_op_returns_pixel_counts(backend):
    m = importlib.import_module("inade.ops.instance_avg_pool")
    x, inst, _ = make_inputs((3, 4, 7, 5, 6), kind="regions")
    _, counts = m.instance_avg_pool_forward(x, inst, 6)
    want = torch.stack([torch.bincount(i.flatten(), minlength=6) for i in inst]).float()
    torch.testing.assert_close(counts, want, atol=0, rtol=0)


def test_double_backward_raises(backend):
    x, inst, dy = make_inputs((2, 3, 4, 5, 3))
    x.requires_grad_()
    with use_backend(backend):
        out = instance_avg_pool(x, inst, 3)
        assert_double_backward_raises(out, x, dy)


def test_opcheck_custom_ops():
    m = importlib.import_module("inade.ops.instance_avg_pool")
    x, inst, dy = make_inputs((2, 5, 4, 6, 3))
    x_cl, _, _ = make_inputs((2, 7, 4, 6, 3), layout="channels_last", seed=1)
    dy_cl = torch.randn(2, 3, 7, device=DEVICE)
    for x, dy, channels_last in ((x, dy, False), (x_cl, dy_cl, True)):
        _, counts = m.instance_avg_pool_forward(x, inst, 3)
        torch.library.opcheck(m.instance_avg_pool_forward, (x, inst, 3))
        torch.library.opcheck(m.instance_avg_pool_backward, (dy, inst, counts, channels_last))


def test_torch_compile_fullgraph_matches_eager():
    x, inst, dy = make_inputs((2, 6, 5, 7, 4), kind="regions")
    x_cl, _, dy_cl = make_inputs((2, 6, 5, 7, 4), layout="channels_last", seed=1)

    def f(a, b):
        return instance_avg_pool(a, inst, 4) * 2 + instance_avg_pool(b, inst, 4), instance_avg_pool(b, inst, 4)

    assert_compiled_matches_eager(f, (x, x_cl), (dy, dy_cl))


def test_reference_reads_like_equation_4():
    """The oracle itself: a hand-computed mean over a 2x3 map with an empty instance."""
    x = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    inst = torch.tensor([[[0, 0, 2], [0, 2, 2]]])
    out = reference.instance_avg_pool(x, inst, 3)
    torch.testing.assert_close(out, torch.tensor([[[7 / 3], [0.0], [14 / 3]]]))


@needs_triton
def test_triton_kernels_compile_ahead_of_time_for_sm80_and_sm90():
    from _aot import compile_ahead_of_time  # noqa: PLC0415

    assert compile_ahead_of_time("inade.kernels.instance_avg_pool") > 0
