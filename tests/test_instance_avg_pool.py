"""instance_avg_pool (paper Eq. 4) against its reference, every backend, forward and backward."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICE, assert_close, needs_triton
from inade.ops import instance_avg_pool, reference, use_backend

# (B, C, H, W, L): odd sizes, B=1, one row, one instance, more instances than one
# Triton block of 64, more instances than pixels of some images.
SHAPES = [
    (2, 8, 5, 7, 4),
    (1, 40, 9, 17, 70),
    (3, 33, 1, 130, 2),
    (2, 16, 6, 6, 1),
    (1, 3, 11, 13, 143),
]


def shape_id(s):
    return "B{}-C{}-H{}-W{}-L{}".format(*s)


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
    """Pooled tables and the gradients of the maps after one call (``x``, ``dy``: tensor or tuple)."""
    single = isinstance(x, torch.Tensor)
    xs = [t.detach().clone().requires_grad_() for t in ((x,) if single else x)]
    dys = (dy,) if single else dy
    with use_backend(backend):
        out = instance_avg_pool(xs[0] if single else tuple(xs), inst, num_instances)
    outs = (out,) if single else out
    torch.autograd.backward(outs, dys)
    return [o.detach() for o in outs], [t.grad for t in xs]


def reference_run(x, inst, num_instances, dy):
    """The reference in float64."""
    single = isinstance(x, torch.Tensor)
    xs = (x,) if single else x
    dys = (dy,) if single else dy
    outs, grads = run("reference", tuple(t.double() for t in xs), inst, num_instances, tuple(d.double() for d in dys))
    return outs, grads


@pytest.mark.parametrize("kind", ["pixels", "regions"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_matches_reference_float32(backend, shape, kind):
    x, inst, dy = make_inputs(shape, kind=kind)
    (out,), (dx,) = run(backend, x, inst, shape[-1], dy)
    (want,), (want_dx,) = reference_run(x, inst, shape[-1], dy)
    assert out.shape == (shape[0], shape[-1], shape[1]) and out.dtype == torch.float32
    assert_close(out, want, torch.float32, msg="pooled means differ")
    assert_close(dx, want_dx, torch.float32, msg="dx differs")


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64, torch.uint8], ids=str)
def test_index_dtypes(backend, index_dtype):
    x, inst, dy = make_inputs((2, 5, 6, 7, 6), kind="regions")
    got = run(backend, x, inst.to(index_dtype), 6, dy)
    want = reference_run(x, inst, 6, dy)
    for a, b in zip(got[0] + got[1], want[0] + want[1]):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_layouts(backend, layout):
    x, inst, dy = make_inputs((2, 19, 7, 9, 5), layout=layout, kind="regions")
    (out,), (dx,) = run(backend, x, inst, 5, dy)
    (want,), (want_dx,) = reference_run(x, inst, 5, dy)
    assert_close(out, want, torch.float32)
    assert_close(dx, want_dx, torch.float32)
    if layout == "channels_last":
        assert dx.is_contiguous(memory_format=torch.channels_last)


def test_several_maps_equal_one_at_a_time(backend):
    """A tuple of maps (channels and layouts differ) gives a tuple equal to pooling each alone."""
    B, H, W, L = 2, 6, 11, 7
    maps = [
        make_inputs((B, 5, H, W, L), seed=1)[0],
        make_inputs((B, 18, H, W, L), layout="channels_last", seed=2)[0],
        make_inputs((B, 3, H, W, L), layout="strided", seed=3)[0],
    ]
    inst = index_map(B, H, W, L, "regions", seed=4)
    dys = tuple(torch.randn(B, L, m.shape[1], device=DEVICE) for m in maps)
    outs, grads = run(backend, tuple(maps), inst, L, dys)
    assert isinstance(outs, list) and len(outs) == 3
    for m, dy, out, dx in zip(maps, dys, outs, grads):
        (alone,), (alone_dx,) = run(backend, m, inst, L, dy)
        torch.testing.assert_close(out, alone, atol=0, rtol=0)
        torch.testing.assert_close(dx, alone_dx, atol=0, rtol=0)


def test_one_instance_is_global_average_pooling(backend):
    x, _, _ = make_inputs((3, 7, 6, 9, 1))
    inst = torch.zeros(3, 6, 9, dtype=torch.long, device=DEVICE)
    dy = torch.randn(3, 1, 7, device=DEVICE)
    (out,), (dx,) = run(backend, x, inst, 1, dy)
    torch.testing.assert_close(out, F.adaptive_avg_pool2d(x, 1).flatten(1)[:, None, :], atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(dx, (dy[:, 0, :, None, None] / 54).expand_as(x), atol=1e-7, rtol=1e-6)


def test_every_pixel_its_own_instance_is_identity(backend):
    """With L = H*W and id = pixel index, the op is x reshaped to [B, HW, C] (and dx is dy reshaped)."""
    B, C, H, W = 2, 5, 4, 7
    x, _, _ = make_inputs((B, C, H, W, H * W))
    inst = torch.arange(H * W, device=DEVICE).view(1, H, W).expand(B, H, W)
    dy = torch.randn(B, H * W, C, device=DEVICE)
    (out,), (dx,) = run(backend, x, inst, H * W, dy)
    torch.testing.assert_close(out, x.flatten(2).transpose(1, 2), atol=0, rtol=0)
    torch.testing.assert_close(dx, dy.transpose(1, 2).reshape(B, C, H, W), atol=0, rtol=0)


def test_empty_instances_give_zero_and_zero_gradient(backend):
    B, C, H, W, L = 2, 6, 5, 8, 9
    x, _, _ = make_inputs((B, C, H, W, L))
    inst = index_map(B, H, W, L, "pixels", high=4)  # ids 4 ... 8 have no pixel
    present = torch.zeros(B, L, dtype=torch.bool, device=DEVICE).scatter_(1, inst.flatten(1), True)
    assert not present[:, 4:].any() and present[:, :4].all()
    # A gradient only on the empty instances' rows reaches no pixel.
    dy = torch.randn(B, L, C, device=DEVICE) * (~present)[..., None]
    (out,), (dx,) = run(backend, x, inst, L, dy)
    assert (out[~present] == 0).all() and (out[present].abs().sum(-1) > 0).all()
    assert (dx == 0).all()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=shape_id)
def test_low_precision(backend, shape, dtype, layout):
    """Within the dtype's tolerance of the float64 result, and at most 2x the error of
    PyTorch's reference run in the same dtype (+ one rounding of the output)."""
    x, inst, dy = make_inputs(shape, dtype, layout=layout, kind="regions")
    L = shape[-1]
    ours = run(backend, x, inst, L, dy)
    exact = reference_run(x, inst, L, dy)
    torch_low = run("reference", x, inst, L, dy)
    for name, o, t, e in zip(("out", "dx"), ours[0] + ours[1], torch_low[0] + torch_low[1], exact[0] + exact[1]):
        assert o.dtype == dtype
        assert_close(o, e, dtype, msg=f"{name} outside the {dtype} tolerance")
        err_ours = (o.double() - e).abs().max().item()
        err_torch = (t.double() - e).abs().max().item()
        slack = torch.finfo(dtype).eps * e.abs().max().item()
        assert err_ours <= 2 * err_torch + slack, f"{name}: ours {err_ours:.3g} vs torch {err_torch:.3g}"


def test_gradcheck_float64(backend):
    x, inst, _ = make_inputs((2, 3, 4, 5, 4), torch.float64, kind="pixels")
    x2, _, _ = make_inputs((2, 2, 4, 5, 4), torch.float64, layout="channels_last", seed=1)
    args = (x.requires_grad_(), x2.requires_grad_())
    with use_backend(backend):
        assert torch.autograd.gradcheck(lambda x: instance_avg_pool(x, inst, 4), args[:1])
        assert torch.autograd.gradcheck(lambda a, b: instance_avg_pool((a, b), inst, 4), args)


@pytest.fixture
def poisoned_empty():
    """Every ``torch.empty``/``at::empty`` (Python, C++ and Triton launchers alike) comes back full of NaN."""
    import torch.utils.deterministic  # noqa: PLC0415

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    assert torch.empty(3).isnan().all()
    yield
    torch.use_deterministic_algorithms(was_deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = was_fill


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_poisoned_outputs_are_overwritten(backend, poisoned_empty, layout):
    """Outputs allocated full of NaN come back without NaN: every element is written."""
    x, inst, dy = make_inputs((2, 37, 5, 29, 6), layout=layout, kind="regions")
    outs, grads = run(backend, x, inst, 6, dy)
    for t in outs + grads:
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
        (lambda a: a.update(x=(a["x"], a["x"].double())), TypeError, r"x\[1\] has dtype torch.float64"),
        (lambda a: a.update(x=(a["x"], a["x"][:, :, :-1])), ValueError, "inst has shape"),
        (lambda a: a.update(x=()), ValueError, "empty sequence"),
        (lambda a: a.update(x=a["x"].numpy()), TypeError, "x must be a torch.Tensor or a tuple/list"),
        (lambda a: a.update(inst=a["inst"].to("meta")), ValueError, "inst is on meta"),
    ],
    ids=["x-3d", "empty-batch", "inst-shape", "inst-float", "x-int", "id-too-large", "id-negative",
         "no-instances", "num-instances-float", "maps-dtype-mismatch", "maps-shape-mismatch", "no-maps",
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
            m.avg_pool_forward([x], inst, 4)
        with pytest.raises(ValueError, match="has id 9 but num_instances is 4"):
            m.avg_pool_backward([dy], inst, counts, [False])


def test_forward_op_returns_pixel_counts(backend):
    m = importlib.import_module("inade.ops.instance_avg_pool")
    x, inst, _ = make_inputs((3, 4, 7, 5, 6), kind="regions")
    _, counts = m.avg_pool_forward([x, x], inst, 6)
    want = torch.stack([torch.bincount(i.flatten(), minlength=6) for i in inst]).float()
    torch.testing.assert_close(counts, want, atol=0, rtol=0)


def test_double_backward_raises(backend):
    x, inst, dy = make_inputs((2, 3, 4, 5, 3))
    x.requires_grad_()
    with use_backend(backend):
        out = instance_avg_pool(x, inst, 3)
        (gx,) = torch.autograd.grad(out, x, dy, create_graph=True)
        with pytest.raises((NotImplementedError, RuntimeError), match="double backward|not implemented|does not require grad"):
            gx.sum().backward()


def test_opcheck_custom_ops():
    m = importlib.import_module("inade.ops.instance_avg_pool")
    x, inst, dy = make_inputs((2, 5, 4, 6, 3))
    x2, _, _ = make_inputs((2, 7, 4, 6, 3), layout="channels_last", seed=1)
    dy2 = torch.randn(2, 3, 7, device=DEVICE)
    _, counts = m.avg_pool_forward([x, x2], inst, 3)
    torch.library.opcheck(m.avg_pool_forward, ([x, x2], inst, 3))
    torch.library.opcheck(m.avg_pool_backward, ([dy, dy2], inst, counts, [False, True]))


def test_torch_compile_fullgraph_matches_eager():
    x, inst, dy = make_inputs((2, 6, 5, 7, 4), kind="regions")
    x2, _, dy2 = make_inputs((2, 6, 5, 7, 4), layout="channels_last", seed=1)

    def f(a, b):
        pooled_a, pooled_b = instance_avg_pool((a, b), inst, 4)
        return pooled_a * 2 + instance_avg_pool(b, inst, 4), pooled_b

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (f, compiled):
        leaves = [t.detach().clone().requires_grad_() for t in (x, x2)]
        outs = fn(*leaves)
        torch.autograd.backward(outs, (dy, dy2))
        results.append([*outs, *(t.grad for t in leaves)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


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
