"""The SD v1.x UNet, autoencoder and CLIP text encoder against diffusers and transformers.

Tiny random networks of the reference libraries are saved as a user's checkpoint would be
(``save_pretrained``, safetensors), loaded with :mod:`scissorhands_jax.sd` and run on the
same float32 inputs. Tolerance: the largest absolute difference at most 1e-4 times the
largest absolute reference output. Both sides compute the same sums in float32 but in
different orders (XLA and PyTorch kernels), which moves results by a few units in the
last place (about 1e-6 relative here); a wrong layout, key or formula moves them by O(1).
Skipped, with the reason, where torch, diffusers or transformers are not installed.
"""

from __future__ import annotations

import fractions
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference networks need torch")
diffusers = pytest.importorskip("diffusers", reason="the reference UNet and VAE are diffusers'")
transformers = pytest.importorskip("transformers", reason="the reference CLIP is transformers'")
safetensors_torch = pytest.importorskip("safetensors.torch")

from scissorhands_jax import sd  # noqa: E402
from scissorhands_jax.sd._convert import key_to_module_path  # noqa: E402

RTOL = 1e-4

# SD v1's structure in miniature: cross-attention down blocks then a plain one, a mid block
# with attention, a plain up block then cross-attention ones, 2 layers per block, 8 heads.
UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 32, 32),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=32,
    norm_num_groups=8,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=16,
)
TEXT_CONFIG = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)


def perturbed(model, seed):
    """Every parameter moved off its initial value (norms start at 1 and 0, some at zero),
    so a scale or bias loaded into the wrong place shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def nhwc(x):
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def assert_close(ours, ref):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= RTOL, f"max abs error {err:.2e} of the output scale"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A diffusers folder with tiny unet/, vae/, text_encoder/ (tokenizer/ is byte-level)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sd")
    unet = perturbed(diffusers.UNet2DConditionModel(**UNET_CONFIG), 1)
    vae = perturbed(diffusers.AutoencoderKL(**VAE_CONFIG), 2)
    text = perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(**TEXT_CONFIG)), 3)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    tok = root / "tokenizer"
    tok.mkdir()
    symbols = list(sd._tokenizer.bytes_to_unicode().values())  # in byte order
    vocab = {s: i for i, s in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    return root, unet, vae, text


@pytest.mark.slow
def test_unet_noise_prediction_equals_diffusers(checkpoint):
    root, ref, _, _ = checkpoint
    unet, params = sd.load_unet(root / "unet")
    gen = torch.Generator().manual_seed(4)
    x, ctx = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 7, 32, generator=gen)
    t = torch.tensor([3, 801])
    with torch.no_grad():
        want = ref(x, t, ctx).sample.numpy().transpose(0, 2, 3, 1)
    got = jax.jit(unet.apply)({"params": params}, nhwc(x), jnp.asarray(t.numpy()), jnp.asarray(ctx))
    assert_close(got, want)


@pytest.mark.slow
def test_vae_encode_and_decode_equal_diffusers(checkpoint):
    root, _, ref, _ = checkpoint
    vae, params = sd.load_vae(root / "vae")
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    gen = torch.Generator().manual_seed(5)
    images, latents = torch.randn(2, 3, 16, 16, generator=gen), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        dist = ref.encode(images).latent_dist
        decoded = ref.decode(latents).sample
    mean, logvar = vae.apply({"params": params}, nhwc(images), method="encode")
    assert_close(mean, dist.mean.numpy().transpose(0, 2, 3, 1))
    assert_close(logvar, dist.logvar.numpy().transpose(0, 2, 3, 1))
    got = vae.apply({"params": params}, nhwc(latents), method="decode")
    assert_close(got, decoded.numpy().transpose(0, 2, 3, 1))


@pytest.mark.slow
def test_text_encoder_last_hidden_state_equals_transformers(checkpoint):
    root, _, _, ref = checkpoint
    encoder, params = sd.load_text_encoder(root / "text_encoder")
    ids = np.random.default_rng(6).integers(0, 300, (2, 77))
    with torch.no_grad():
        want = ref(torch.as_tensor(ids)).last_hidden_state.numpy()
    assert_close(encoder.apply({"params": params}, jnp.asarray(ids)), want)


@pytest.mark.slow
def test_load_diffusers_reads_every_part(checkpoint):
    root = checkpoint[0]
    m = sd.load_diffusers(root)
    assert m.unet.config.block_out_channels == (16, 32, 32)
    assert m.text_encoder.config.num_hidden_layers == 2
    ids = m.tokenizer(["Hi!"])
    # bytes first, then byte + </w>, then start and end: <s> h i</w> !</w> </s>, padded with </s>
    np.testing.assert_array_equal(ids[0, :5], [512, ord("h"), 256 + ord("i"), 256 + ord("!"), 513])
    assert ids.shape == (1, 77) and np.all(ids[0, 5:] == 513)
    assert set(m.unet_params) >= {"conv_in", "up_blocks_2", "mid_block", "time_embedding"}


# ---------------------------------------------------------------- CompVis single files


def _resnet_to_compvis(rest):
    names = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1"}
    names |= {"norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    head, _, tail = rest.partition(".")
    return f"{names[head]}.{tail}"


def unet_to_compvis(key, config):
    """A diffusers UNet key -> the CompVis name (the inverse of the loader's mapping)."""
    n = config["layers_per_block"] + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2"}
    fixed |= {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for old, new in fixed.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block = 1 + int(m[1]) * n + int(m[3])
        if m[2] == "resnets":
            return f"input_blocks.{block}.0.{_resnet_to_compvis(m[4])}"
        return f"input_blocks.{block}.1.{m[4]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * n}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d)\.(.+)", key):
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{2 * int(m[2])}.{_resnet_to_compvis(m[3])}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block = int(m[1]) * n + int(m[3])
        if m[2] == "resnets":
            return f"output_blocks.{block}.0.{_resnet_to_compvis(m[4])}"
        return f"output_blocks.{block}.1.{m[4]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        level = int(m[1])
        sub = 2 if config["up_block_types"][level] == "CrossAttnUpBlock2D" else 1
        return f"output_blocks.{level * n + n - 1}.{sub}.{m[2]}"
    raise AssertionError(f"no CompVis name for {key}")


def vae_to_compvis(key, value, config):
    last = len(config["block_out_channels"]) - 1
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
    key = re.sub(
        r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key
    )
    key = re.sub(
        r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers\.0)\.",
        lambda m: f"decoder.up.{last - int(m[1])}.{'block' if m[2] == 'resnets' else 'upsample'}.",
        key,
    )
    key = key.replace("mid_block.resnets.0.", "mid.block_1.").replace(
        "mid_block.resnets.1.", "mid.block_2."
    )
    attention = {
        "group_norm": "norm",
        "to_q": "q",
        "to_k": "k",
        "to_v": "v",
        "to_out.0": "proj_out",
    }
    for old, new in attention.items():
        if f"mid_block.attentions.0.{old}." in key:
            key = key.replace(f"mid_block.attentions.0.{old}.", f"mid.attn_1.{new}.")
            if new != "norm" and key.endswith("weight"):
                value = value[:, :, None, None]  # CompVis: 1x1 convolutions
    key = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
    return key, value


@pytest.fixture(scope="module")
def compvis_state(checkpoint):
    _, unet, vae, text = checkpoint
    state = {"betas": torch.zeros(3)}  # a schedule entry the loader ignores
    for k, v in unet.state_dict().items():
        state["model.diffusion_model." + unet_to_compvis(k, UNET_CONFIG)] = v
    for k, v in vae.state_dict().items():
        k, v = vae_to_compvis(k, v, VAE_CONFIG)
        state["first_stage_model." + k] = v
    for k, v in text.state_dict().items():  # SD v1.4 files say text_model.embeddings...
        state["cond_stage_model.transformer.text_model." + k] = v
    return {k: v.contiguous() for k, v in state.items()}


def test_compvis_names_are_those_diffusers_converts_back(checkpoint, compvis_state):
    """diffusers' own single-file converter maps the test's CompVis names back exactly."""
    from diffusers.loaders import single_file_utils as sfu

    _, unet, vae, _ = checkpoint
    back = sfu.convert_ldm_unet_checkpoint(compvis_state, dict(unet.config))
    assert set(back) == set(unet.state_dict())
    for k, v in unet.state_dict().items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)
    back = sfu.convert_ldm_vae_checkpoint(compvis_state, dict(vae.config))
    assert set(back) == set(vae.state_dict())
    for k, v in vae.state_dict().items():
        torch.testing.assert_close(back[k].reshape(v.shape), v, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_compvis_single_file_loads_to_the_same_networks(
    checkpoint, compvis_state, tmp_path, suffix
):
    root, unet_ref, vae_ref, _ = checkpoint
    path = tmp_path / f"sd{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": compvis_state, "global_step": 1}, path)
    else:
        safetensors_torch.save_file(compvis_state, path)
    m = sd.load_compvis(
        path,
        unet_config=sd.config_from_dict(UNET_CONFIG, sd.UNetConfig),
        vae_config=sd.config_from_dict(VAE_CONFIG, sd.VAEConfig),
        text_config=sd.config_from_dict(TEXT_CONFIG, sd.TextConfig),
    )
    direct = sd.load_diffusers(root)
    for name in ("unet_params", "vae_params", "text_params"):
        a, b = getattr(m, name), getattr(direct, name)
        assert jax.tree.structure(a) == jax.tree.structure(b), name
        assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def test_pickled_checkpoints_with_objects_are_refused(tmp_path):
    path = tmp_path / "objects.ckpt"
    # an object a full unpickling would build (Fraction(1, 3)); weights_only refuses it
    torch.save({"state_dict": {"x": torch.zeros(1)}, "callback": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match="cannot read .* with torch"):
        sd.load_compvis(path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read .* as safetensors"):
        sd.load_compvis(tmp_path / "bad.safetensors")


def test_reinit_targets_are_compvis_output_blocks_4_and_7(compvis_state):
    """The release re-initialises the self-attention of CompVis' output_blocks.4 and .7."""
    config = sd.config_from_dict(UNET_CONFIG, sd.UNetConfig)
    for block, level, target in zip((4, 7), (1, 2), sd.REINIT_SELF_ATTENTION, strict=True):
        key = f"output_blocks.{block}.1.transformer_blocks.0.attn1.to_q.weight"
        assert f"model.diffusion_model.{key}" in compvis_state
        name = sd._compvis.unet_key(key, config)
        assert name == f"up_blocks.{level}.attentions.1.transformer_blocks.0.attn1.to_q.weight"
        assert "/".join(key_to_module_path(name)[0]) == f"{target}/to_q"


# ---------------------------------------------------------------- the real SD v1.4 sizes

# unet/, vae/ and text_encoder/config.json of CompVis/stable-diffusion-v1-4 (the fields
# that shape the networks, plus bookkeeping fields the reader must ignore)
SD14_UNET = dict(
    _class_name="UNet2DConditionModel",
    _diffusers_version="0.2.2",
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-05,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
SD14_VAE = dict(
    _class_name="AutoencoderKL",
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4,
)
SD14_TEXT = dict(
    architectures=["CLIPTextModel"],
    hidden_act="quick_gelu",
    hidden_size=768,
    intermediate_size=3072,
    max_position_embeddings=77,
    num_attention_heads=12,
    num_hidden_layers=12,
    projection_dim=768,
    vocab_size=49408,
)


@pytest.mark.slow
def test_sd_v14_configurations_build_every_reference_weight():
    """With SD v1.4's configs, every weight of the reference networks (built on torch's meta
    device: shapes, no memory) has its place, of its shape, in the Flax trees, and back."""
    from scissorhands_jax.sd._convert import _flax_layout, expected_shapes

    def flax_shapes(state_dict, expected):
        out = {}
        for key, value in state_dict.items():
            module, leaf = key_to_module_path(key.removeprefix("text_model."))
            leaves = {p[-1] for p in expected if p[:-1] == module}
            if leaf == "weight":
                leaf = next(n for n in ("kernel", "scale", "embedding") if n in leaves)
            path = (*module, leaf)
            zeros = np.broadcast_to(np.float32(0), tuple(value.shape))  # no memory
            out[path] = _flax_layout(zeros, leaf, expected.get(path, ())).shape
        return out

    cfg = sd.config_from_dict(SD14_UNET, sd.UNetConfig)
    assert cfg == sd.UNetConfig()  # the defaults are SD v1.4's
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(
            **{k: v for k, v in SD14_UNET.items() if not k.startswith("_")}
        )
        vae = diffusers.AutoencoderKL(**{k: v for k, v in SD14_VAE.items() if k[0] != "_"})
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD14_TEXT))
    example = (jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 1, 768)))
    want = expected_shapes(sd.UNet(cfg), *example)
    assert flax_shapes(unet.state_dict(), want) == want
    vcfg = sd.config_from_dict(SD14_VAE, sd.VAEConfig)
    assert vcfg == sd.VAEConfig()
    want = expected_shapes(sd.AutoencoderKL(vcfg), jnp.zeros((1, 8, 8, 3)))
    assert flax_shapes(vae.state_dict(), want) == want
    tcfg = sd.config_from_dict(SD14_TEXT, sd.TextConfig)
    assert tcfg == sd.TextConfig()
    want = expected_shapes(sd.CLIPTextEncoder(tcfg), jnp.zeros((1, 1), jnp.int32))
    state = {k: v for k, v in text.state_dict().items() if not k.endswith("position_ids")}
    assert flax_shapes(state, want) == want
