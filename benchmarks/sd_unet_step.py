"""One repair step of the full-size SD v1.4 UNet: JAX (bfloat16 compute) next to PyTorch.

Question: what does one Stable Diffusion repair step cost on one accelerator? The step is
the latent-diffusion ε-loss (:func:`scissorhands_jax.sd.ldm_loss`) of the SD v1.4 UNet
(its ``unet/config.json`` values, random initialisation: the cost does not depend on the
weights), its gradient, and an Adam update (lr 1e-5), at batch 16 on 64x64x4 latents
with 77-token, 768-d text embeddings. JAX computes in bfloat16 through the project's
precision helper (:func:`scissorhands_jax._precision.with_precision`: float32 parameters
and Adam state, bfloat16 forward and backward). Where torch, diffusers and a CUDA device
are present, the same step of diffusers' ``UNet2DConditionModel`` under bf16 autocast
with ``torch.optim.Adam`` runs in a separate process (JAX holds most of the device
memory) on the same device.

Reported per framework: the median step time of ``--steps`` steps after ``--warmup``
steps (compilation included in the warm-up), and the peak device memory
(``jax.devices()[0].memory_stats()["peak_bytes_in_use"]``; ``torch.cuda.
max_memory_allocated``); None where the device does not report it (CPU).

Run:   python benchmarks/sd_unet_step.py [--batch 16] [--steps 10] [--warmup 3]
Smoke: python benchmarks/sd_unet_step.py --tiny          (a tiny UNet; CPU, seconds)
Writes benchmarks/results/sd_unet_step.json (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SD14_UNET = {  # CompVis/stable-diffusion-v1-4 unet/config.json
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}
TINY_UNET = {
    **SD14_UNET,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
    "sample_size": 8,
}
LEARNING_RATE = 1e-5


def _settings(args) -> dict:
    if args.tiny:
        return {"unet": TINY_UNET, "batch": 2, "size": 8, "tokens": 77}
    return {"unet": SD14_UNET, "batch": args.batch, "size": 64, "tokens": 77}


def _median(times: list[float]) -> float:
    return statistics.median(times)


def run_jax(args) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from scissorhands_jax import sd
    from scissorhands_jax._precision import with_precision

    s = _settings(args)
    config = sd.config_from_dict(s["unet"], sd.UNetConfig, "unet/config.json")
    unet = sd.UNet(config)
    b, size, dim = s["batch"], s["size"], config.cross_attention_dim
    k = jax.random.split(jax.random.key(0), 5)
    latents = jax.random.normal(k[0], (b, size, size, config.in_channels))
    context = jax.random.normal(k[1], (b, s["tokens"], dim))
    t = jax.random.randint(k[2], (b,), 0, 1000)
    noise = jax.random.normal(k[3], latents.shape)
    params = jax.jit(unet.init)(k[4], latents[:1], t[:1], context[:1])["params"]
    schedule = sd.SchedulerConfig().schedule()

    def loss(p, model_state, batch, train):
        del train
        value = sd.ldm_loss(unet, p, schedule, batch["latents"], batch["context"], *batch["tn"])
        return value, model_state

    mixed = with_precision(loss, args.precision)
    tx = optax.adam(LEARNING_RATE)

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(lambda p: mixed(p, {}, batch, True)[0])(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    step = jax.jit(step, donate_argnums=(0, 1))
    batch = {"latents": latents, "context": context, "tn": (t, noise)}
    opt_state = tx.init(params)
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        params, opt_state, value = step(params, opt_state, batch)
        value.block_until_ready()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "framework": "jax",
        "precision": args.precision,
        "parameters": sum(x.size for x in jax.tree.leaves(params)),
        "step_s_median": _median(times),
        "step_s_all": times,
        "peak_bytes": stats.get("peak_bytes_in_use"),
        "loss_finite": bool(jnp.isfinite(value)),
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
    }


def run_torch(args) -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    s = _settings(args)
    dev = torch.device("cuda")
    unet = UNet2DConditionModel(**s["unet"]).to(dev).train()
    opt = torch.optim.Adam(unet.parameters(), lr=LEARNING_RATE)
    b, size = s["batch"], s["size"]
    gen = torch.Generator(device=dev).manual_seed(0)
    latents = torch.randn(b, 4, size, size, device=dev, generator=gen)
    context = torch.randn(
        b, s["tokens"], s["unet"]["cross_attention_dim"], device=dev, generator=gen
    )
    t = torch.randint(0, 1000, (b,), device=dev, generator=gen)
    noise = torch.randn(latents.shape, device=dev, generator=gen)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1.0 - betas, 0).float().to(dev)[t].view(b, 1, 1, 1)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            x_t = abar.sqrt() * latents + (1.0 - abar).sqrt() * noise
            eps = unet(x_t, t, encoder_hidden_states=context).sample
            loss = torch.nn.functional.mse_loss(eps.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return {
        "framework": "torch",
        "precision": "bf16 autocast",
        "step_s_median": _median(times),
        "step_s_all": times,
        "peak_bytes": torch.cuda.max_memory_allocated(),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }


def child(framework: str) -> dict:
    """``run_<framework>`` in a fresh process: its JSON, or the error it printed."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--framework", framework]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        if framework == "jax":
            raise SystemExit(f"the JAX step failed:\n{proc.stderr[-4000:]}")
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_available() -> str | None:
    """None when torch, diffusers and CUDA are there, else why not."""
    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError as err:
        return f"not installed: {err.name}"
    return None if torch.cuda.is_available() else "no CUDA device"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--precision", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--tiny", action="store_true", help="a tiny UNet, batch 2 (smoke run)")
    parser.add_argument("--framework", default="both", choices=("both", "jax", "torch"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--batch and --steps must be positive, --warmup at least 0")
    if args.tiny:
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)

    if args.framework != "both":  # a child process: print one JSON line
        result = run_jax(args) if args.framework == "jax" else run_torch(args)
        print(json.dumps(result))
        return

    s = _settings(args)
    record = {
        "benchmark": "sd_unet_step",
        "tiny": args.tiny,
        "batch": s["batch"],
        "latent_size": s["size"],
        "tokens": s["tokens"],
        "steps": args.steps,
        "warmup": args.warmup,
    }
    # each framework in its own process: JAX keeps most of the device memory it starts with
    record["jax"] = child("jax")
    missing = torch_available()
    record["torch"] = child("torch") if missing is None else {"skipped": missing}
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this process only records
    from _common import machine

    record["machine"] = machine()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "sd_unet_step_tiny.json" if args.tiny else "sd_unet_step.json"
    (out / name).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("jax", "torch")}, indent=2))
    print("wrote", out / name)


if __name__ == "__main__":
    main()
