"""inade.load_official: the public checkpoints' key names and shapes load as they are,
and anything else is refused with an error that names every offending key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import inade

REFERENCE = Path(__file__).resolve().parent / "data"  # key lists of the public code (copied from shared/reference)


def official_entries(name: str, part: str) -> list[dict]:
    return json.loads((REFERENCE / f"official_state_dict_{name}.json").read_text())[part]


def fake_checkpoint(name: str, part: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly the public code's keys, shapes and dtypes, random values
    (positive running variances, unit-norm power-iteration vectors)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for e in official_entries(name, part):
        key, shape = e["key"], e["shape"]
        if e["dtype"] == "int64":
            t = torch.tensor(1234)
        elif key.endswith("running_var"):
            t = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("weight_u", "weight_v")):
            t = torch.nn.functional.normalize(torch.randn(shape, generator=g), dim=0)
        else:
            t = torch.randn(shape, generator=g) * 0.05
        state[key] = t
    return state


def test_generator_loads_the_public_keys_and_values(tmp_path):
    """CelebAMask-HQ (85 M parameters): from a file, then every value is where it belongs."""
    cfg = inade.config("celeba")
    state = fake_checkpoint("celeba", "generator")
    path = tmp_path / "best_net_G.pth"
    torch.save(state, path)
    G = inade.Generator(cfg)
    assert inade.load_official(G, path) is G
    mine = G.state_dict()
    assert set(mine) == set(state)
    for key, value in state.items():
        assert torch.equal(mine[key], value), key
    assert G.head_0.norm_0.param_free_norm.num_batches_tracked.item() == 1234

    # Eval mode: the spectral-normed conv uses the stored u, v: W / (uᵀ W v).
    G.eval()
    conv = G.up_2.conv_0
    w, u, v = state["up_2.conv_0.weight_orig"], state["up_2.conv_0.weight_u"], state["up_2.conv_0.weight_v"]
    sigma = torch.dot(u, w.flatten(1) @ v)
    label = torch.zeros(1, 256, 256, dtype=torch.long)
    with torch.no_grad():
        G(label, label)
    torch.testing.assert_close(conv.weight, w / sigma)


@pytest.mark.parametrize("name", ["cityscapes", "ade20k", "deepfashion"])
def test_generator_key_names_and_shapes_fit_every_configuration(name):
    """The other paper configurations: no missing or unexpected key, no shape mismatch
    (compared on the meta device, so no memory is spent)."""
    with torch.device("meta"):
        G = inade.Generator(inade.config(name))
    state = {e["key"]: torch.empty(e["shape"], device="meta") for e in official_entries(name, "generator")}
    inade.load_official(G, state)  # raises on any difference


def has_encoder() -> bool:
    try:
        with torch.device("meta"):
            inade.NoiseEncoder(inade.config("synthetic"))
    except (ImportError, NotImplementedError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not has_encoder(), reason="InstanceConv2d not built yet")
@pytest.mark.parametrize("name", ["cityscapes", "deepfashion"])
def test_encoder_loads_the_public_keys(name):
    E = inade.NoiseEncoder(inade.config(name))
    state = fake_checkpoint(name, "encoder", seed=1)
    inade.load_official(E, {"module." + k: v for k, v in state.items()})  # DataParallel prefix is dropped
    for key, value in state.items():
        assert torch.equal(E.state_dict()[key], value), key


def test_errors_name_every_missing_unexpected_and_mismatched_key():
    cfg = inade.config("synthetic", ngf=4)
    G = inade.Generator(cfg)
    state = {k: v.clone() for k, v in G.state_dict().items()}
    del state["up_1.norm_s.fc_noise.bias"]
    state["up_9.conv_0.weight"] = torch.zeros(3)
    state["head_0.norm_0.weight"] = torch.zeros(7, 64, 2)
    with pytest.raises(ValueError) as info:
        inade.load_official(G, state)
    message = str(info.value)
    assert "missing key up_1.norm_s.fc_noise.bias (the model expects shape [32])" in message
    assert "unexpected key up_9.conv_0.weight (shape [3]" in message
    assert "shape mismatch at head_0.norm_0.weight: checkpoint [7, 64, 2], model [6, 64, 2]" in message
    assert "label_nc" in message  # the hint
    assert "3 problem(s)" in message


def test_errors_on_a_checkpoint_without_spectral_norm():
    """A generator built without spectral norm cannot take the public keys silently."""
    with torch.device("meta"):
        G = inade.Generator(inade.config("deepfashion", norm_G="spadesyncbatch3x3"))
    state = {e["key"]: torch.empty(e["shape"], device="meta") for e in official_entries("deepfashion", "generator")}
    with pytest.raises(ValueError, match="(?s)missing key head_0.conv_0.weight .*hint: spectral-norm keys differ"):
        inade.load_official(G, state)


def test_non_strict_loads_what_fits_and_warns():
    G = inade.Generator(inade.config("synthetic", ngf=4))
    state = {k: torch.full_like(v, 0.5) for k, v in G.state_dict().items() if v.is_floating_point()}
    state["extra"] = torch.zeros(1)
    with pytest.warns(RuntimeWarning, match="unexpected key extra"):
        inade.load_official(G, state, strict=False)
    assert torch.all(G.fc.weight == 0.5)


def test_rejects_what_is_not_a_state_dict():
    G = inade.Generator(inade.config("synthetic", ngf=4))
    with pytest.raises(TypeError, match="path_or_state_dict must be a file path or a state dict"):
        inade.load_official(G, 42)


def test_sketch_checkpoints_need_a_sketch_model_and_say_so():
    """A public --add_sketch checkpoint has sketch_conv / merge_conv in every norm."""
    with torch.device("meta"):
        plain = inade.Generator(inade.config("synthetic", ngf=4))
        sketch = inade.Generator(inade.config("synthetic", ngf=4, add_sketch=True))
    state = {k: torch.empty(v.shape, device="meta") for k, v in sketch.state_dict().items()}
    assert "head_0.norm_0.sketch_conv.weight" in state and "up_3.norm_1.merge_conv.weight" in state
    assert tuple(state["up_3.norm_1.merge_conv.weight"].shape) == (4, 8, 1, 1)
    inade.load_official(sketch, state)
    with pytest.raises(ValueError, match="(?s)unexpected key .*sketch_conv.*hint: sketch keys differ"):
        inade.load_official(plain, state)


@pytest.mark.parametrize("content, match", [(None, "no such file"), (b"", "empty"), (b"not a checkpoint", None)])
def test_unreadable_checkpoint_is_one_clear_error(tmp_path, content, match):
    """A missing, empty or foreign file given to load_official is a UserError naming the file."""
    from inade.utils.errors import UserError  # noqa: PLC0415

    path = tmp_path / "best_net_G.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as err:
        inade.load_official(inade.Generator(inade.config("celeba", ngf=4, crop_size=32)), path)
    assert str(path) in str(err.value)
