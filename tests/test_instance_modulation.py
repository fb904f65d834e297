"""instance_modulation against its reference, every backend, forward and backward."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from conftest import (
    DEGENERATE_MAPS,
    DEVICE,
    SHAPES,
    SUM_SCALE,
    assert_close,
    assert_compiled_matches_eager,
    assert_double_backward_raises,
    assert_within_twice_torch_error,
    degenerate_map,
    gradcheck,
    needs_triton,
    shape_id,
)
from inade.ops import instance_modulation, use_backend


def make_inputs(shape, dtype=torch.float32, layout="contiguous", seed=0, empty_instances=False):
    B, C, H, W, L = shape
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, C, H, W, generator=g) * 3 + 1.5).to(DEVICE, dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(B, C, H, 2 * W, generator=g).to(DEVICE, dtype)[..., ::2]
    high = max(1, L // 2) if empty_instances else L
    inst = torch.randint(0, high, (B, H, W), generator=g).to(DEVICE)
    gamma = torch.randn(B, L, C, generator=g).to(DEVICE, dtype)
    beta = torch.randn(B, L, C, generator=g).to(DEVICE, dtype)
    dy = torch.randn(B, C, H, W, generator=g).to(DEVICE, dtype)
    return x, inst, gamma, beta, dy


def run(backend, x, inst, gamma, beta, dy, training=True, stats=None, **kw):
    """Output, gradients of (x, gamma, beta) and the running statistics after one call."""
    x, gamma, beta = (t.detach().clone().requires_grad_() for t in (x, gamma, beta))
    C = x.shape[1]
    rm, rv = stats if stats is not None else (torch.zeros(C, device=x.device), torch.ones(C, device=x.device))
    rm, rv = rm.clone(), rv.clone()
    with use_backend(backend):
        y = instance_modulation(x, inst, gamma, beta, running_mean=rm, running_var=rv, training=training, **kw)
    y.backward(dy)
    return y.detach(), x.grad, gamma.grad, beta.grad, rm, rv


def reference_in(dtype, *tensors):
    """Tensors in the precision the reference runs in (float64 for low-precision inputs)."""
    ref_dtype = torch.float64 if dtype in (torch.float16, torch.bfloat16, torch.float32) else dtype
    return [t.to(ref_dtype) if t.is_floating_point() else t for t in tensors]


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_reference_float32(backend, shape, training):
    x, inst, gamma, beta, dy = make_inputs(shape)
    C = shape[1]
    stats = (torch.randn(C, device=DEVICE), torch.rand(C, device=DEVICE) + 0.5)
    got = run(backend, x, inst, gamma, beta, dy, training, stats)
    want = run("reference", *reference_in(torch.float32, x, inst, gamma, beta, dy), training,
               tuple(s.double() for s in stats))
    for name, a, b in zip(("y", "dx", "dgamma", "dbeta", "running_mean", "running_var"), got, want):
        # Gradients are sums over up to B*H*W pixels: widen.
        scale = 1.0 if name in ("y", "running_mean", "running_var") else SUM_SCALE
        assert_close(a, b, torch.float32, scale, msg=f"{name} differs")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=shape_id)
def test_low_precision_within_twice_pytorch_error(backend, shape, dtype):
    """Error of our low-precision path <= 2x the error of the reference run in the same dtype (+ slack)."""
    x, inst, gamma, beta, dy = make_inputs(shape, dtype)
    exact = run("reference", *reference_in(dtype, x, inst, gamma, beta, dy))
    ours = run(backend, x, inst, gamma, beta, dy)
    torch_low = run("reference", x, inst, gamma, beta, dy)
    assert_within_twice_torch_error(("y", "dx", "dgamma", "dbeta"), ours, torch_low, exact, dtype)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_layouts(backend, layout):
    x, inst, gamma, beta, dy = make_inputs((2, 12, 7, 9, 5), layout=layout)
    got = run(backend, x, inst, gamma, beta, dy)
    want = run("reference", *reference_in(torch.float32, x.contiguous(), inst, gamma, beta, dy))
    for a, b in zip(got, want):
        assert_close(a, b, torch.float32, SUM_SCALE)
    if layout == "channels_last":
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kind", DEGENERATE_MAPS)
def test_degenerate_maps(backend, kind):
    """One instance: nn.BatchNorm2d with weight gamma[:, 0] and bias beta[:, 0]. Every pixel its
    own instance: batch norm times the tables read as per-pixel maps. Empty instances: zero
    gradient for their rows, and only for theirs."""
    B, C, H, W = 3, 5, 6, 7
    inst, L = degenerate_map(kind, B, H, W)
    x, _, gamma, beta, dy = make_inputs((B, C, H, W, L))
    if kind == "one-instance":  # one affine for the whole batch
        gamma, beta = gamma[:1].expand_as(gamma).contiguous(), beta[:1].expand_as(beta).contiguous()
    y, _, dgamma, dbeta, _, _ = run(backend, x, inst, gamma, beta, dy)
    if kind == "one-instance":
        assert_close(y, F.batch_norm(x, None, None, gamma[0, 0], beta[0, 0], training=True), torch.float32)
    elif kind == "own-instance-per-pixel":
        per_pixel = lambda t: t.transpose(1, 2).reshape(B, C, H, W)  # noqa: E731
        want = F.batch_norm(x, None, None, training=True) * per_pixel(gamma) + per_pixel(beta)
        assert_close(y, want, torch.float32)
    else:
        present = torch.zeros(B, L, dtype=torch.bool, device=DEVICE).scatter_(1, inst.flatten(1), True)
        assert not present[:, 4:].any() and present[:, :4].all()
        assert (dgamma[~present] == 0).all() and (dbeta[~present] == 0).all()
        assert (dbeta[present].abs().sum(-1) > 0).all()


def test_gradcheck_float64(backend):
    x, inst, gamma, beta, _ = make_inputs((2, 3, 4, 5, 3), torch.float64)
    rm, rv = torch.randn(3, device=DEVICE, dtype=torch.float64), torch.rand(3, device=DEVICE, dtype=torch.float64) + 0.5
    args = tuple(t.requires_grad_() for t in (x, gamma, beta))
    with use_backend(backend):
        assert gradcheck(lambda x, g, b: instance_modulation(x, inst, g, b), args)
        assert gradcheck(
            lambda x, g, b: instance_modulation(x, inst, g, b, running_mean=rm, running_var=rv, training=False), args
        )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_poisoned_outputs_are_overwritten(backend, poisoned_memory, training, layout):
    """With every allocation full of NaN, outputs and gradients come back without NaN: every
    element is written (also the rows of instances without pixels), and no scratch is read
    before it is written."""
    x, inst, gamma, beta, dy = make_inputs((2, 37, 5, 29, 6), layout=layout, empty_instances=True)
    stats = (torch.zeros(37, device=DEVICE), torch.ones(37, device=DEVICE))
    for t in run(backend, x, inst, gamma, beta, dy, training, stats):
        assert not t.isnan().any()


def test_running_statistics_follow_batch_norm(backend):
    x, inst, gamma, beta, dy = make_inputs((2, 7, 5, 6, 3))
    bn = torch.nn.BatchNorm2d(7, affine=False, momentum=0.3).to(DEVICE)
    bn(x)
    rm, rv = torch.zeros(7, device=DEVICE), torch.ones(7, device=DEVICE)
    with use_backend(backend):
        instance_modulation(x, inst, gamma, beta, running_mean=rm, running_var=rv, momentum=0.3)
    torch.testing.assert_close(rm, bn.running_mean)
    torch.testing.assert_close(rv, bn.running_var)


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda a: a.update(x=a["x"][0]), ValueError, r"x must be \[B, C, H, W\]"),
        (lambda a: a.update(x=a["x"][:0], inst=a["inst"][:0]), ValueError, "empty batch"),
        (lambda a: a.update(inst=a["inst"][:, :-1]), ValueError, "inst has shape"),
        (lambda a: a.update(inst=a["inst"].float()), TypeError, "integer"),
        (lambda a: a.update(gamma=a["gamma"][:, :, :-1]), ValueError, r"gamma must be \[B, L, C\]"),
        (lambda a: a.update(beta=a["beta"].double()), TypeError, "beta has dtype"),
        (lambda a: a.update(x=a["x"].int()), TypeError, "x must be float"),
        (lambda a: a["inst"].view(-1)[3].fill_(4), ValueError, "has id 4 but num_instances is 4"),
        (lambda a: a["inst"].view(-1)[3].fill_(-1), ValueError, "negative id"),
        (lambda a: a.update(training=False), ValueError, "eval mode"),
        (lambda a: a.update(inst=a["inst"].to("meta")), ValueError, "inst is on meta"),
    ],
    ids=["x-3d", "empty-batch", "inst-shape", "inst-float", "gamma-shape", "dtype-mismatch", "x-int",
         "id-too-large", "id-negative", "eval-without-stats", "device-mismatch"],
)
@pytest.mark.parametrize("backend_name", ["reference", "cpp", "triton"])
def test_bad_input_raises_clear_error(backend_name, mutate, error, match):
    x, inst, gamma, beta, _ = make_inputs((2, 4, 5, 6, 4))
    args = dict(x=x, inst=inst, gamma=gamma, beta=beta, training=True)
    mutate(args)
    with use_backend(backend_name), pytest.raises(error, match=match):
        instance_modulation(args.pop("x"), args.pop("inst"), args.pop("gamma"), args.pop("beta"), **args)


def test_training_needs_more_than_one_value(backend):
    x, inst, gamma, beta, _ = make_inputs((1, 4, 1, 1, 1))
    with use_backend(backend), pytest.raises(ValueError, match="more than 1 value"):
        instance_modulation(x, inst, gamma, beta)


def test_double_backward_raises(backend):
    x, inst, gamma, beta, dy = make_inputs((2, 3, 4, 5, 3))
    x.requires_grad_()
    with use_backend(backend):
        y = instance_modulation(x, inst, gamma, beta)
        assert_double_backward_raises(y, x, dy)


# L = 3, 40, 70: the C++ pixel path's table in two registers, in four, and by paired gathers.
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", [(2, 19, 5, 7, 3), (2, 8, 9, 33, 40), (3, 8, 9, 33, 70)], ids=shape_id)
def test_one_pass_training_equals_separate_passes(backend, shape, dtype):
    """The training passes (forward: stats + apply; backward: sums + dx) give what the
    separate passes give: outputs, statistics and all three gradients."""
    m = importlib.import_module("inade.ops.instance_modulation")
    from inade.ops import reference  # noqa: PLC0415

    x, inst, gamma, beta, dy = make_inputs(shape, dtype=dtype)
    with use_backend(backend):
        y, mean, var, invstd = m.instance_modulation_forward(x, inst, gamma, beta, 1e-5)
        dx, dgamma, dbeta = m.instance_modulation_backward(dy, x, inst, gamma, mean, invstd)
        mean0, var0 = m.instance_modulation_stats(x)
        invstd0 = torch.rsqrt(var0 + 1e-5)
        y0 = m.instance_modulation_apply(x, inst, gamma, beta, mean0, invstd0)
        dgamma0, dbeta0 = m.instance_modulation_backward_reduce(dy, x, inst, mean0, invstd0, shape[-1])
        terms = reference.dxhat_sums(gamma, dgamma0, dbeta0) / (x.numel() // x.shape[1])
        dx0 = m.instance_modulation_backward_dx(dy, x, inst, gamma, mean0, invstd0, terms[0], terms[1], True)
    for name, got, want in (("y", y, y0), ("mean", mean, mean0), ("var", var, var0), ("invstd", invstd, invstd0),
                            ("dx", dx, dx0), ("dgamma", dgamma, dgamma0), ("dbeta", dbeta, dbeta0)):
        assert got.dtype == want.dtype, name
        assert_close(got, want, dtype, SUM_SCALE if name.startswith("d") else 1.0, msg=f"{name} differs")


@pytest.mark.parametrize("grad_x", [True, False], ids=["with-dx", "no-dx"])
def test_table_gradients_without_input_gradient(backend, grad_x):
    """A backward that needs no input gradient (separate sums pass) gives the table
    gradients of one that does (the one-pass backward)."""
    x, inst, gamma, beta, dy = make_inputs((2, 9, 6, 11, 5))
    gamma, beta = (t.detach().clone().requires_grad_() for t in (gamma, beta))
    x = x.detach().clone().requires_grad_(grad_x)
    with use_backend(backend):
        instance_modulation(x, inst, gamma, beta).backward(dy)
    want = run("reference", *make_inputs((2, 9, 6, 11, 5)))
    assert_close(gamma.grad, want[2], torch.float32, SUM_SCALE)
    assert_close(beta.grad, want[3], torch.float32, SUM_SCALE)


def test_opcheck_custom_ops():
    m = importlib.import_module("inade.ops.instance_modulation")

    x, inst, gamma, beta, dy = make_inputs((2, 5, 4, 6, 3))
    mean, var = m.instance_modulation_stats(x)
    invstd = torch.rsqrt(var + 1e-5)
    dg, db = m.instance_modulation_backward_reduce(dy, x, inst, mean, invstd, 3)
    samples = [
        (m.instance_modulation_stats, (x,)),
        (m.instance_modulation_apply, (x, inst, gamma, beta, mean, invstd)),
        (m.instance_modulation_backward_reduce, (dy, x, inst, mean, invstd, 3)),
        (m.instance_modulation_backward_dx, (dy, x, inst, gamma, mean, invstd, dg.sum((0, 1)), db.sum((0, 1)), True)),
        (m.instance_modulation_forward, (x, inst, gamma, beta, 1e-5)),
        (m.instance_modulation_backward, (dy, x, inst, gamma, mean, invstd)),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_matches_eager():
    x, inst, gamma, beta, dy = make_inputs((2, 6, 5, 7, 4))
    rm, rv = torch.zeros(6, device=DEVICE), torch.ones(6, device=DEVICE)

    def f(x, gamma, beta):
        return instance_modulation(x, inst, gamma, beta, running_mean=rm, running_var=rv)

    assert_compiled_matches_eager(f, (x, gamma, beta), (dy,))


@needs_triton
def test_triton_kernels_compile_ahead_of_time_for_sm80_and_sm90():
    from _aot import compile_ahead_of_time  # noqa: PLC0415

    assert compile_ahead_of_time("inade.kernels.instance_modulation") > 0


def _sync_bn_worker(rank, world, init_file, backend, result_file):
    import torch.distributed as dist  # noqa: PLC0415

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, inst, gamma, beta, dy = make_inputs((4, 6, 5, 7, 3))
        half = slice(2 * rank, 2 * rank + 2)
        got = run(backend, x[half], inst[half], gamma[half], beta[half], dy[half], process_group=dist.group.WORLD)
        torch.save([t.cpu() for t in got], f"{result_file}.{rank}")
        # Both processes done with every collective before either closes its connections: a
        # process still finishing its last receive when the other tore down was seen to abort
        # in gloo ("terminate called without an active exception"), once in a CI run.
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend_name", ["reference", "cpp"])
def test_synchronised_batch_norm_two_processes_equal_one(tmp_path, backend_name):
    """Two gloo processes with half the batch each give the output, gradients and running
    statistics of one process with the whole batch."""
    import torch.multiprocessing as mp  # noqa: PLC0415

    result = tmp_path / "result"
    mp.spawn(_sync_bn_worker, args=(2, str(tmp_path / "init"), backend_name, str(result)), nprocs=2)
    x, inst, gamma, beta, dy = make_inputs((4, 6, 5, 7, 3))
    whole = run(backend_name, x, inst, gamma, beta, dy)
    halves = [torch.load(f"{result}.{r}") for r in range(2)]
    for i, name in enumerate(("y", "dx", "dgamma", "dbeta")):
        torch.testing.assert_close(torch.cat([h[i] for h in halves]), whole[i].cpu(), msg=f"{name} differs")
    for i, name in ((4, "running_mean"), (5, "running_var")):
        for h in halves:
            torch.testing.assert_close(h[i], whole[i].cpu(), msg=f"{name} differs")
