"""instance_conv2d against its reference and against the convolutions it must reduce
to, every backend, forward and backward (x, weight, bias)."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from conftest import (
    DEVICE,
    SUM_SCALE,
    assert_close,
    assert_compiled_matches_eager,
    assert_double_backward_raises,
    assert_within_twice_torch_error,
    degenerate_map,
    fused_backends,
    gradcheck,
    needs_triton,
)
from inade.nn.conv import InstanceConv2d
from inade.ops import instance_conv2d, use_backend

# (B, C_in, C_out, H, W, k, stride, padding, L): odd sizes, stride 2 on odd inputs,
# padding 0/1/2, k 1/3/5, B=1, channel counts past one block, stride 3. (The conv has
# its own list: conftest.SHAPES has no kernel geometry.)
SHAPES = [
    (2, 3, 5, 7, 9, 3, 1, 1, 4),
    (1, 4, 6, 9, 8, 3, 2, 1, 3),
    (2, 5, 3, 11, 10, 3, 2, 0, 5),
    (2, 4, 3, 6, 7, 1, 1, 0, 3),
    (1, 3, 4, 8, 9, 5, 1, 2, 4),
    (1, 40, 70, 5, 6, 3, 1, 1, 3),
    (1, 3, 4, 10, 11, 3, 3, 1, 3),
]


def shape_id(s):
    return "B{}-Ci{}-Co{}-H{}-W{}-k{}-s{}-p{}-L{}".format(*s)


def instance_map(B, H, W, L, generator, block=3):
    """Ids in ``[0, L)`` laid out as blocky regions with some single-pixel islands."""
    coarse = torch.randint(0, L, (B, -(-H // block), -(-W // block)), generator=generator)
    inst = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :H, :W].contiguous()
    islands = torch.rand(B, H, W, generator=generator) < 0.15
    return torch.where(islands, torch.randint(0, L, (B, H, W), generator=generator), inst)


def make_inputs(shape, dtype=torch.float32, seed=0):
    B, Ci, Co, H, W, k, s, p, L = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, Ci, H, W, generator=g)
    weight = torch.randn(Co, Ci, k, k, generator=g) / (Ci * k * k) ** 0.5
    bias = torch.randn(Co, generator=g)
    inst = instance_map(B, H, W, L, g)
    h_out, w_out = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    dy = torch.randn(B, Co, h_out, w_out, generator=g)
    to = lambda t: t.to(DEVICE, dtype)  # noqa: E731
    return to(x), inst.to(DEVICE), to(weight), to(bias), to(dy)


def run(backend, x, inst, weight, bias, dy, stride, padding, renorm=False):
    """Output and the gradients of (x, weight, bias)."""
    x, weight = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    bias = bias.detach().clone().requires_grad_() if bias is not None else None
    with use_backend(backend):
        y = instance_conv2d(x, inst, weight, bias, stride, padding, renorm)
    y.backward(dy)
    return y.detach(), x.grad, weight.grad, bias.grad if bias is not None else None


def in_float64(*tensors):
    return [t.double() if t is not None and t.is_floating_point() else t for t in tensors]


def check_against_reference(backend, inputs, stride, padding, renorm, dtype=torch.float32):
    got = run(backend, *inputs, stride, padding, renorm)
    want = run("reference", *in_float64(*inputs), stride, padding, renorm)
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), got, want):
        # Weight and bias gradients are sums over every output pixel: widen.
        assert_close(a, b, dtype, 1.0 if name in ("y", "dx") else SUM_SCALE, msg=f"{name} differs")
    return got


@pytest.mark.parametrize("renorm", [False, True], ids=["plain", "renorm"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_matches_reference_float32(backend, shape, renorm):
    check_against_reference(backend, make_inputs(shape), shape[6], shape[7], renorm)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("backend_name", ["reference", *fused_backends()])
def test_one_instance_is_dense_conv(backend_name, stride):
    """Every pixel in one instance: plain F.conv2d with zero padding."""
    x, _, weight, bias, _ = make_inputs((2, 4, 5, 9, 8, 3, stride, 1, 1))
    inst = degenerate_map("one-instance", 2, 9, 8)[0] + 7  # any one id: only equality matters
    with use_backend(backend_name):
        y = instance_conv2d(x, inst, weight, bias, stride, 1)
    assert_close(y, F.conv2d(x, weight, bias, stride, 1), torch.float32)


@pytest.mark.parametrize("backend_name", ["reference", *fused_backends()])
def test_one_instance_with_renorm_is_partial_conv(backend_name):
    """One instance, renorm: border windows are rescaled by k² / (taps inside the image)."""
    x, _, weight, bias, _ = make_inputs((1, 3, 4, 6, 7, 3, 1, 1, 1))
    inst = degenerate_map("one-instance", 1, 6, 7)[0]
    inside = F.conv2d(torch.ones(1, 1, 6, 7, device=DEVICE), torch.ones(1, 1, 3, 3, device=DEVICE), padding=1)
    want = F.conv2d(x, weight, None, 1, 1) * (9 / inside) + bias[:, None, None]
    with use_backend(backend_name):
        y = instance_conv2d(x, inst, weight, bias, 1, 1, renorm=True)
    assert_close(y, want, torch.float32)


@pytest.mark.parametrize("renorm", [False, True], ids=["plain", "renorm"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("backend_name", ["reference", *fused_backends()])
def test_own_instance_per_pixel_is_centre_tap(backend_name, stride, renorm):
    """Every pixel its own instance: only the centre tap counts, a strided 1x1 conv
    with the centre weights (times k² with renorm)."""
    x, _, weight, bias, _ = make_inputs((2, 4, 3, 7, 9, 3, stride, 1, 1))
    inst = degenerate_map("own-instance-per-pixel", 2, 7, 9)[0]
    with use_backend(backend_name):
        y = instance_conv2d(x, inst, weight, bias, stride, 1, renorm)
    centre = weight[:, :, 1:2, 1:2] * (9.0 if renorm else 1.0)
    assert_close(y, F.conv2d(x[:, :, ::stride, ::stride], centre, bias), torch.float32)


def test_sparse_large_ids_and_windows_without_taps(backend):
    """Ids need not be compact (only equality matters). With padding 2 the corner
    windows' centres lie outside the image (id 0); no pixel has id 0, so no tap
    counts there and the output is the bias alone, also with renorm."""
    x, _, weight, bias, dy = make_inputs((2, 3, 4, 6, 7, 3, 1, 2, 1))
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([3, 1_000_003, 2**40])
    inst = ids[instance_map(2, 6, 7, 3, g)].to(DEVICE)
    for renorm in (False, True):
        y, *_ = check_against_reference(backend, (x, inst, weight, bias, dy), 1, 2, renorm)
        torch.testing.assert_close(y[:, :, 0, 0], bias.expand(2, -1))


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_layouts(backend, layout):
    shape = (2, 6, 5, 7, 9, 3, 2, 1, 4)
    x, inst, weight, bias, dy = make_inputs(shape)
    if layout == "channels_last":
        x, dy = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
    else:
        x = x.transpose(2, 3).contiguous().transpose(2, 3)  # neither layout: the op copies it
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    y, dx, _, _ = check_against_reference(backend, (x, inst, weight, bias, dy), 2, 1, True)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert dx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_many_tiles(backend, layout):
    """A map tall enough that the CPU kernels split it into several row tiles (whose
    input-gradient scatters overlap) and the GPU kernels into many programs."""
    if backend == "triton" and DEVICE.type == "cpu":
        pytest.skip("too slow for the Triton interpreter")
    for stride in (1, 2):
        shape = (2, 64, 8, 151, 17, 3, stride, 1, 5)
        x, inst, weight, bias, dy = make_inputs(shape)
        if layout == "channels_last":
            x, dy = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
        check_against_reference(backend, (x, inst, weight, bias, dy), stride, 1, True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES[:2], ids=shape_id)
def test_low_precision_within_twice_pytorch_error(backend, shape, dtype):
    """Error of our low-precision path <= 2x the error of the reference run in the same dtype (+ slack)."""
    inputs = make_inputs(shape, dtype)
    s, p = shape[6], shape[7]
    exact = run("reference", *in_float64(*inputs), s, p, True)
    ours = run(backend, *inputs, s, p, True)
    torch_low = run("reference", *inputs, s, p, True)
    assert_within_twice_torch_error(("y", "dx", "dweight", "dbias"), ours, torch_low, exact, dtype)


@pytest.mark.parametrize("renorm", [False, True], ids=["plain", "renorm"])
def test_gradcheck_float64(backend, renorm):
    x, inst, weight, bias, _ = make_inputs((2, 1, 2, 5, 4, 3, 2, 1, 3), torch.float64)
    args = tuple(t.requires_grad_() for t in (x, weight, bias))
    with use_backend(backend):
        assert gradcheck(lambda x, w, b: instance_conv2d(x, inst, w, b, 2, 1, renorm), args)
        assert gradcheck(lambda x, w: instance_conv2d(x, inst, w, None, 1, 1, renorm), args[:2])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("renorm", [False, True], ids=["plain", "renorm"])
def test_poisoned_outputs_are_overwritten(backend, poisoned_memory, renorm, layout):
    """With every allocation full of NaN (outputs, scratch, partial sums), outputs and
    gradients come back without NaN: every element is written, no scratch read unwritten."""
    shape = (2, 37, 19, 5, 29, 3, 2, 1, 6)
    x, inst, weight, bias, dy = make_inputs(shape)
    if layout == "channels_last":
        x, dy = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
    for t in run(backend, x, inst, weight, bias, dy, 2, 1, renorm):
        assert not t.isnan().any()


_BAD_INPUTS = {
    "x-3d": (lambda a: a.update(x=a["x"][0]), ValueError, r"x must be \[B, C, H, W\]"),
    "x-int": (lambda a: a.update(x=a["x"].int()), TypeError, "x must be float"),
    "inst-shape": (lambda a: a.update(inst=a["inst"][:, :-1]), ValueError, "inst has shape"),
    "inst-float": (lambda a: a.update(inst=a["inst"].float()), TypeError, "integer"),
    "weight-channels": (lambda a: a.update(weight=a["weight"][:, :-1]), ValueError, r"weight must be \[C_out, C_in"),
    "weight-not-square": (lambda a: a.update(weight=a["weight"][..., :1]), ValueError, r"weight must be \[C_out"),
    "even-kernel": (lambda a: a.update(weight=a["weight"][..., :2, :2]), ValueError, "even kernel size 2"),
    "weight-dtype": (lambda a: a.update(weight=a["weight"].double()), TypeError, "weight has dtype"),
    "bias-shape": (lambda a: a.update(bias=a["bias"][:-1]), ValueError, r"bias must be \[C_out\]"),
    "negative-id": (lambda a: a["inst"].view(-1)[3].fill_(-2), ValueError, r"negative id \(-2\)"),
    "stride-0": (lambda a: a.update(stride=0), ValueError, "stride must be >= 1, got 0"),
    "stride-float": (lambda a: a.update(stride=1.5), TypeError, "stride must be an int"),
    "padding-negative": (lambda a: a.update(padding=-1), ValueError, "padding must be >= 0"),
    "too-small": (lambda a: a.update(x=a["x"][:, :, :2], inst=a["inst"][:, :2]), ValueError, "smaller than the kernel"),
    "device": (lambda a: a.update(weight=a["weight"].to("meta")), ValueError, "weight is on meta"),
}


@pytest.mark.parametrize("case", list(_BAD_INPUTS))
@pytest.mark.parametrize("backend_name", ["reference", "cpp", "triton"])
def test_bad_input_raises_clear_error(backend_name, case):
    mutate, error, match = _BAD_INPUTS[case]
    x, inst, weight, bias, _ = make_inputs((2, 4, 5, 5, 6, 3, 1, 0, 4))
    args = dict(x=x, inst=inst, weight=weight, bias=bias, stride=1, padding=0)
    mutate(args)
    with use_backend(backend_name), pytest.raises(error, match=match):
        instance_conv2d(**args)


def test_double_backward_raises(backend):
    x, inst, weight, bias, dy = make_inputs((2, 3, 4, 5, 6, 3, 1, 1, 3))
    x.requires_grad_()
    with use_backend(backend):
        y = instance_conv2d(x, inst, weight.requires_grad_(), bias, 1, 1)
        assert_double_backward_raises(y, x, dy)


def test_opcheck_custom_ops():
    m = importlib.import_module("inade.ops.instance_conv2d")
    x, inst, weight, bias, dy = make_inputs((2, 3, 4, 7, 6, 3, 2, 1, 3))
    x_cl, dy_cl = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
    samples = [
        (m.instance_conv2d_forward, (x, inst, weight, bias, 2, 1, False)),
        (m.instance_conv2d_forward, (x_cl, inst, weight, None, 2, 1, True)),
        (m.instance_conv2d_backward_input, (dy, x, inst, weight, 2, 1, True)),
        (m.instance_conv2d_backward_input, (dy_cl, x_cl, inst, weight, 2, 1, False)),
        (m.instance_conv2d_backward_weight, (dy, x, inst, 3, 2, 1, True)),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_matches_eager():
    x, inst, weight, bias, dy = make_inputs((2, 4, 5, 7, 6, 3, 1, 1, 3))

    def f(x, weight, bias):
        return instance_conv2d(x, inst, weight, bias, 1, 1, True)

    assert_compiled_matches_eager(f, (x, weight, bias), (dy,))


def test_module_initialises_and_loads_like_conv2d():
    """Same parameters, names and initialisation as nn.Conv2d: the public code's
    InstanceAwareConv2d state dicts load, and one instance gives nn.Conv2d's output."""
    torch.manual_seed(0)
    dense = torch.nn.Conv2d(6, 5, 3, stride=2, padding=1)
    torch.manual_seed(0)
    ours = InstanceConv2d(6, 5, 3, stride=2, padding=1)
    assert set(ours.state_dict()) == {"weight", "bias"}
    torch.testing.assert_close(ours.weight, dense.weight)
    torch.testing.assert_close(ours.bias, dense.bias)
    ours.load_state_dict(dense.state_dict())
    x = torch.randn(2, 6, 9, 10)
    inst = torch.zeros(2, 9, 10, dtype=torch.long)
    assert_close(ours(x, inst), dense(x), torch.float32)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        InstanceConv2d(6, 5, 4)


@needs_triton
def test_triton_kernels_compile_ahead_of_time_for_sm80_and_sm90():
    from _aot import compile_ahead_of_time  # noqa: PLC0415

    assert compile_ahead_of_time("inade.kernels.instance_conv2d") > 0
