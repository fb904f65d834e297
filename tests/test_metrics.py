"""inade.metrics FID: the Fréchet distance's known answers, statistics files, feature extraction
and the Inception weight file's loading (random weights in the real file's layout)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from inade.metrics import (
    FIDInceptionV3,
    MetricsError,
    Statistics,
    WeightsError,
    fid,
    frechet_distance,
    inception_features,
    load_inception,
    load_statistics,
    save_statistics,
    statistics,
)
from inade.metrics import testing as mt
from inade.metrics.fid import preprocess


def _spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1) * np.eye(d)


def _fd_eigh(mu1, s1, mu2, s2):
    """An independent route: tr √(Σ1 Σ2) = tr √(√Σ1 Σ2 √Σ1), a symmetric PSD matrix (eigh)."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(m, 0, None)).sum())


@pytest.mark.parametrize("d", [3, 17, 64])
def test_frechet_distance_matches_scipy_sqrtm_and_eigh(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(direct, rel=1e-9, abs=1e-9)
    assert got == pytest.approx(_fd_eigh(mu1, s1, mu2, s2), rel=1e-7)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)


def test_frechet_distance_near_singular_covariances():
    """Rank-deficient covariances (fewer samples than features), as FID gets with few images."""
    rng = np.random.default_rng(1)
    d = 40
    s1, s2 = _spd(rng, d, rank=5), _spd(rng, d, rank=7)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(got)
    assert got == pytest.approx(_fd_eigh(mu1, s1, mu2, s2), rel=1e-4, abs=1e-4)
    # exactly singular: both zero covariance -> the eps fallback, the distance of the means
    z = np.zeros((d, d))
    assert frechet_distance(mu1, z, mu2, z) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-6)


def test_frechet_distance_closed_form_and_gaussian_samples():
    # diagonal covariances: FD = |Δμ|² + Σ (√a − √b)²
    a, b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 1.0, 2.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-10)
    # statistics of Gaussian samples approach the closed form
    rng = np.random.default_rng(0)
    n = 200_000
    f1 = mu1 + rng.standard_normal((n, 4)) * np.sqrt(a)
    f2 = mu2 + rng.standard_normal((n, 4)) * np.sqrt(b)
    s1, s2 = statistics(f1), statistics(f2)
    assert s1.count == n and s1.sigma.shape == (4, 4)
    assert frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma) == pytest.approx(exact, rel=0.02)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="different lengths"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------------------
# Network, features, files
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random ``pt_inception-2015-12-05-6726825d.pth`` in the real key layout."""
    return mt.save(mt.inception_state(seed=0), tmp_path_factory.mktemp("w") / "pt_inception-2015-12-05-6726825d.pth")


@pytest.fixture(scope="module")
def net(weights):
    """The loaded network, run at 75×75 (the smallest Inception-v3 input) to keep the tests fast."""
    n = load_inception(weights)
    small = FIDInceptionV3(input_size=75)
    small.load_state_dict(n.state_dict())
    return small


def _write_images(folder, n, seed, size=(24, 20), shift=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = np.clip(rng.integers(0, 200, (size[1], size[0], 3)) + shift, 0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"img_{i:03d}.png")
    return folder


def test_real_key_layout_loads_and_parameter_count(weights):
    state = torch.load(weights, weights_only=True)
    assert "Mixed_7c.branch_pool.conv.weight" in state and state["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)
    n = load_inception(weights)
    params = sum(p.numel() for p in n.parameters())
    # torchvision's inception_v3 has 27,161,264 parameters (its weights table); minus AuxLogits
    # (98,560 + 2,459,136 + 769,000) and with 1008 instead of 1000 classes (+8 x 2049):
    assert params == 27_161_264 - 3_326_696 + 8 * 2049
    for k, v in n.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k


def test_weight_file_errors(weights, tmp_path, monkeypatch):
    monkeypatch.delenv("INADE_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(WeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth.*pytorch-fid"):
        load_inception()
    with pytest.raises(WeightsError, match="not found: .*nothere.pth"):
        load_inception(tmp_path / "nothere.pth")
    monkeypatch.setenv("INADE_INCEPTION_WEIGHTS", str(weights.parent))  # a folder holding the file
    assert isinstance(load_inception(), FIDInceptionV3)
    state = torch.load(weights, weights_only=True)
    bad = dict(state)
    bad["Mixed_6b.branch7x7_2.conv.weight"] = torch.zeros(128, 128, 7, 1)
    with pytest.raises(WeightsError, match=r"Mixed_6b\.branch7x7_2\.conv\.weight has shape \(128, 128, 7, 1\)"):
        load_inception(mt.save(bad, tmp_path / "shape.pth"))
    missing = {k: v for k, v in state.items() if not k.startswith("Mixed_7c")}
    with pytest.raises(WeightsError, match="missing key"):
        load_inception(mt.save(missing, tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="unexpected key.*AuxLogits"):
        load_inception(mt.save({**state, "AuxLogits.fc.weight": torch.zeros(3)}, tmp_path / "aux.pth"))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"text\.pth: not a PyTorch checkpoint"):
        load_inception(tmp_path / "text.pth")
    nan = {**state, "Conv2d_1a_3x3.conv.weight": torch.full_like(state["Conv2d_1a_3x3.conv.weight"], float("nan"))}
    with pytest.raises(WeightsError, match=r"nan\.pth: tensor Conv2d_1a_3x3\.conv\.weight holds NaN"):
        load_inception(mt.save(nan, tmp_path / "nan.pth"))  # third-party weights go through the checked reader too
    with pytest.raises(WeightsError, match="does not fit"):
        load_inception(mt.save(mt.lpips_lin_state("alex"), tmp_path / "alex.pth"))
    # num_batches_tracked present (newer torch.save) is accepted too
    with_counters = {**state, "Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(0)}
    load_inception(mt.save(with_counters, tmp_path / "counters.pth"))


def test_features_folder_tensor_and_batches_agree(net, tmp_path):
    """All 3 images are used with batch 2 (no drop at the end), and a folder equals its uint8 tensor."""
    folder = _write_images(tmp_path / "a", 3, seed=0)
    f2 = inception_features(folder, net, batch_size=2)
    f5 = inception_features(folder, net, batch_size=3)
    assert f2.shape == (3, 2048) and f2.dtype == np.float64
    np.testing.assert_allclose(f2, f5, rtol=1e-4, atol=1e-5)
    arrays = np.stack([np.asarray(Image.open(p)) for p in sorted(folder.iterdir())])
    ft = inception_features(torch.from_numpy(arrays).permute(0, 3, 1, 2), net, batch_size=3)
    np.testing.assert_allclose(ft, f5, rtol=1e-5, atol=1e-6)
    assert np.isfinite(f5).all() and f5.std() > 0


class PixelFeatures(torch.nn.Module):
    """A stand-in feature net for the FID pipeline (the real 2048-d covariance makes sqrtm slow):
    4x4 average-pooled pixels, 48 features, inputs in [0, 1] like the Inception net's."""

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def test_fid_self_zero_stats_files_and_shift(tmp_path):
    small = PixelFeatures()
    real = _write_images(tmp_path / "real", 60, seed=1)
    fake = _write_images(tmp_path / "fake", 60, seed=2, shift=60)
    assert fid(real, real, net=small, batch_size=7) == pytest.approx(0, abs=1e-6)
    d = fid(real, fake, net=small, batch_size=7)
    assert d > 0.1
    assert fid(real, fake, net=small, batch_size=60, method="eigh") == pytest.approx(d, rel=1e-6)
    s = statistics(inception_features(real, small, batch_size=8))
    assert s.count == 60  # 7 full batches and a last one of 4
    save_statistics(tmp_path / "real.npz", s)
    save_statistics(tmp_path / "train_mu_si" / "synthetic", s)
    with np.load(tmp_path / "real.npz") as f:
        assert sorted(f.files) == ["mu", "sigma"] and f["sigma"].shape == (48, 48)
    assert np.load(tmp_path / "train_mu_si" / "synthetic" / "m.npy").shape == (48,)
    for stats_path in (tmp_path / "real.npz", tmp_path / "train_mu_si" / "synthetic"):
        assert fid(stats_path, fake, net=small, batch_size=7) == pytest.approx(d, rel=1e-9)
        loaded = load_statistics(stats_path)
        np.testing.assert_array_equal(loaded.mu, s.mu)


def test_fid_input_errors(tmp_path):
    small = PixelFeatures()
    real = _write_images(tmp_path / "real", 3, seed=1, size=(24, 20))
    other = _write_images(tmp_path / "other", 3, seed=1, size=(32, 16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricsError, match="size mismatch: .*img_000.png is 24x20"):
        fid(real, other, net=small)
    assert np.isfinite(fid(real, other, net=small, resize_size=16))  # both resized to 16x32 first
    with pytest.raises(MetricsError, match="empty folder"):
        fid(real, tmp_path / "empty", net=small)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(MetricsError, match=r"broken/x\.png"):
        inception_features(tmp_path / "broken", small)
    np.savez(tmp_path / "bad.npz", m=np.zeros(3))
    with pytest.raises(MetricsError, match=r"bad\.npz: .*'mu' and 'sigma'"):
        load_statistics(tmp_path / "bad.npz")


def test_preprocess_resize_size_is_the_public_scripts_2_to_1():
    x = torch.rand(1, 3, 64, 64)
    assert preprocess(x, 16).shape == (1, 3, 16, 32)
    assert preprocess(x, 16, resize_ratio=1.0).shape == (1, 3, 16, 16)
    assert preprocess(x, None) is x


def test_network_blocks_follow_the_fid_graph():
    """The FID-specific pools: padding excluded from the A/C/E averages, max pool in Mixed_7c."""
    n = FIDInceptionV3(input_size=75)
    assert n.Mixed_7b.pool.__name__ == "_pool_avg" and n.Mixed_7c.pool.__name__ == "_pool_max"
    x = torch.ones(1, 1, 4, 4)
    from inade.metrics.inception import _pool_avg

    assert torch.equal(_pool_avg(x), x)  # count_include_pad=True would give 4/9 in the corners
    with pytest.raises(ValueError, match="at least 75"):
        FIDInceptionV3(input_size=64)


def test_statistics_needs_two_vectors():
    with pytest.raises(MetricsError, match="at least 2"):
        statistics(np.zeros((1, 5)))
    assert isinstance(statistics(np.random.default_rng(0).standard_normal((3, 2))), Statistics)
