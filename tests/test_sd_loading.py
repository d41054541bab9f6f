"""Loading SD weights without torch: layouts, key names, refusals, configurations, and the
Flax-only pieces (time embedding, shapes) checked against hand computations."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("regex", reason="the sd package's tokenizer needs the regex package")
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="weights are safetensors")

from scissorhands_jax import sd  # noqa: E402
from scissorhands_jax.sd._convert import _flax_layout, key_to_module_path  # noqa: E402
from scissorhands_jax.sd._unet import timestep_embedding  # noqa: E402

TEXT = dict(
    vocab_size=20,
    hidden_size=8,
    intermediate_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=6,
)


def text_state_dict(seed=0):
    """A transformers-named CLIP text state dict in PyTorch layout, random values."""
    rng = np.random.default_rng(seed)
    d, f = TEXT["hidden_size"], TEXT["intermediate_size"]
    shapes = {
        "text_model.embeddings.token_embedding.weight": (TEXT["vocab_size"], d),
        "text_model.embeddings.position_embedding.weight": (6, d),
        "text_model.final_layer_norm.weight": (d,),
        "text_model.final_layer_norm.bias": (d,),
    }
    layer = "text_model.encoder.layers.0."
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes |= {f"{layer}self_attn.{name}.weight": (d, d), f"{layer}self_attn.{name}.bias": (d,)}
    shapes |= {f"{layer}mlp.fc1.weight": (f, d), f"{layer}mlp.fc1.bias": (f,)}
    shapes |= {f"{layer}mlp.fc2.weight": (d, f), f"{layer}mlp.fc2.bias": (d,)}
    for norm in ("layer_norm1", "layer_norm2"):
        shapes |= {f"{layer}{norm}.weight": (d,), f"{layer}{norm}.bias": (d,)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


@pytest.fixture
def text_folder(tmp_path):
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**TEXT, "architectures": ["CLIPTextModel"]}))
    state = text_state_dict()
    state["text_model.embeddings.position_ids"] = np.arange(6)[None]  # a buffer, dropped
    safetensors_numpy.save_file(state, str(folder / "model.safetensors"))
    return folder


def test_key_names_map_to_parameter_paths():
    assert key_to_module_path("down_blocks.0.resnets.1.conv1.weight") == (
        ("down_blocks_0", "resnets_1", "conv1"),
        "weight",
    )
    assert key_to_module_path("a.attn1.to_out.0.bias") == (("a", "attn1", "to_out_0"), "bias")
    assert key_to_module_path("time_embedding.linear_1.weight")[0] == (
        "time_embedding",
        "linear_1",
    )


def test_layouts_convolution_linear_and_1x1_convolution_into_linear():
    w = np.arange(2 * 3 * 3 * 5, dtype=np.float32).reshape(5, 2, 3, 3)  # (out, in, kh, kw)
    k = _flax_layout(w, "kernel", (3, 3, 2, 5))
    assert k.shape == (3, 3, 2, 5) and k[1, 2, 0, 4] == w[4, 0, 1, 2]
    m = np.arange(6, dtype=np.float32).reshape(2, 3)  # (out, in)
    assert _flax_layout(m, "kernel", (3, 2))[2, 1] == m[1, 2]
    c = m[:, :, None, None]
    np.testing.assert_array_equal(_flax_layout(c, "kernel", (3, 2)), m.T)
    np.testing.assert_array_equal(_flax_layout(m, "scale", (2, 3)), m)


def test_text_encoder_loads_with_layouts_and_drops_buffers(text_folder):
    encoder, params = sd.load_text_encoder(text_folder)
    state = text_state_dict()
    fc1 = params["encoder"]["layers_0"]["mlp"]["fc1"]
    np.testing.assert_array_equal(
        fc1["kernel"], state["text_model.encoder.layers.0.mlp.fc1.weight"].T
    )
    np.testing.assert_array_equal(
        params["embeddings"]["token_embedding"]["embedding"],
        state["text_model.embeddings.token_embedding.weight"],
    )
    np.testing.assert_array_equal(
        params["final_layer_norm"]["scale"], state["text_model.final_layer_norm.weight"]
    )
    out = encoder.apply({"params": params}, jnp.zeros((2, 6), jnp.int32))
    assert out.shape == (2, 6, 8) and bool(jnp.all(jnp.isfinite(out)))


def test_text_encoder_is_causal(text_folder):
    encoder, params = sd.load_text_encoder(text_folder)
    a = jnp.asarray([[1, 2, 3, 4, 5, 6]])
    b = a.at[0, 4:].set(jnp.asarray([9, 9]))
    fa, fb = (encoder.apply({"params": params}, x) for x in (a, b))
    np.testing.assert_allclose(fa[0, :4], fb[0, :4], rtol=1e-6, atol=1e-6)
    assert not np.allclose(fa[0, 4:], fb[0, 4:])


def test_refusals_name_the_key(text_folder):
    config = sd.config_from_dict(TEXT, sd.TextConfig)
    state = text_state_dict()
    bad = dict(state)
    bad["text_model.encoder.layers.0.mlp.fc1.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"encoder\.layers\.0\.mlp\.fc1\.weight has shape"):
        sd.text_params(config, bad)
    extra = {**state, "text_model.encoder.layers.1.mlp.fc1.weight": np.zeros((16, 8))}
    with pytest.raises(ValueError, match=r"1 unexpected keys \(e\.g\. \['encoder\.layers\.1"):
        sd.text_params(config, extra)
    missing = {k: v for k, v in state.items() if "fc2.bias" not in k}
    with pytest.raises(ValueError, match=r"1 parameters missing.*layers_0/mlp/fc2/bias"):
        sd.text_params(config, missing)


def test_missing_files_and_folders_are_refused(text_folder, tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        sd.load_unet(tmp_path / "nowhere")
    (text_folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no safetensors weights"):
        sd.load_text_encoder(text_folder)
    with pytest.raises(ValueError, match="no unet/"):
        sd.load_diffusers(tmp_path)
    with pytest.raises(ValueError, match="no file"):
        sd.load_compvis(tmp_path / "sd-v1-4.ckpt")


def test_configurations_not_ported_are_refused():
    with pytest.raises(ValueError, match="act_fn"):
        sd.config_from_dict({"act_fn": "gelu"}, sd.UNetConfig)
    with pytest.raises(ValueError, match="timestep_post_act"):
        sd.config_from_dict({"timestep_post_act": "silu"}, sd.UNetConfig)
    with pytest.raises(ValueError, match="per-block attention_head_dim"):
        sd.config_from_dict({"attention_head_dim": [5, 10, 20, 20]}, sd.UNetConfig)
    with pytest.raises(ValueError, match="blocks are ported"):
        sd.config_from_dict({"down_block_types": ["SimpleCrossAttnDownBlock2D"] * 4}, sd.UNetConfig)
    with pytest.raises(ValueError, match="hidden_act"):
        sd.config_from_dict({"hidden_act": "relu"}, sd.TextConfig)


@pytest.mark.slow
def test_sd_v14_defaults_and_head_count():
    unet = sd.UNetConfig()
    assert unet.heads == 8 and unet.cross_attention_dim == 768 and unet.layers_per_block == 2
    assert sd.config_from_dict({"num_attention_heads": 5}, sd.UNetConfig).heads == 5
    assert sd.VAEConfig().scaling_factor == 0.18215
    # the real SD v1.4 UNet: 859,520,964 parameters (its model card: 860M)
    shapes = sd._convert.expected_shapes(
        sd.UNet(unet), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 1, 768))
    )
    assert sum(math.prod(s) for s in shapes.values()) == 859_520_964
    assert any(
        p[:5] == ("up_blocks_1", "attentions_1", "transformer_blocks_0", "attn1", "to_q")
        for p in shapes
    )


def test_timestep_embedding_closed_form():
    t = jnp.asarray([0.0, 7.0])
    emb = np.asarray(timestep_embedding(t, 6, flip_sin_to_cos=True, freq_shift=0))
    freqs = [10000.0 ** (-i / 3) for i in range(3)]
    want = [[math.cos(s * f) for f in freqs] + [math.sin(s * f) for f in freqs] for s in (0, 7)]
    np.testing.assert_allclose(emb, want, rtol=1e-6, atol=1e-6)


def test_unet_refuses_sizes_it_cannot_halve():
    config = sd.config_from_dict(
        dict(
            block_out_channels=(8, 8),
            norm_num_groups=4,
            attention_head_dim=2,
            cross_attention_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        ),
        sd.UNetConfig,
    )
    with pytest.raises(ValueError, match="multiples of 2"):
        jax.eval_shape(
            lambda: sd.UNet(config).init(
                jax.random.key(0), jnp.zeros((1, 5, 4, 4)), 0, jnp.zeros((1, 3, 4))
            )
        )


def test_place_params_puts_every_leaf_on_the_sharding():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    placed = sd.place_params({"a": {"kernel": np.ones((2, 3))}}, sharding)
    assert placed["a"]["kernel"].sharding == sharding


@pytest.mark.slow
def test_importing_the_package_does_not_import_sd():
    code = (
        "import sys, scissorhands_jax, scissorhands_jax.diffusion; "
        "assert 'scissorhands_jax.sd' not in sys.modules; "
        "assert not any(m.startswith('safetensors') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
