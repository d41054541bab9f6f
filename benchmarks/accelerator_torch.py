"""The ResNet-18 training step of ``benchmarks/accelerator.py`` in PyTorch, on the same
device, for the ratio a user asks about: how does the JAX step compare with torch's?

The same network (CIFAR stem: 3x3 convolution, no max-pool; basic blocks [2, 2, 2, 2];
BatchNorm; 10 classes), the same step (cross-entropy, SGD with momentum 0.9 and coupled
weight decay 5e-4), the same synthetic CIFAR-shaped batches, with torch's strong settings:
``channels_last`` memory format, bfloat16 autocast for the bfloat16 rows, cuDNN autotuning,
TF32 allowed for float32 (as XLA may use it), and ``torch.compile`` (``--no-compile`` to
compare eager). torch is imported only when the script runs; without it the script says
so, writes nothing and exits 0.

Run:  python benchmarks/accelerator_torch.py [--quick]
Writes benchmarks/results/accelerator_torch_<device>.json and, when
accelerator_<device kind>.json of the JAX script is there, the JAX / torch ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path


def resnet18(nn):
    """ResNet-18 with the CIFAR stem, built from ``torch.nn`` (no torchvision needed)."""

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            out = nn.functional.relu(self.bn1(self.conv1(x)))
            return nn.functional.relu(self.bn2(self.conv2(out)) + self.short(x))

    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)]
    return nn.Sequential(*layers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: batch 2, 2 steps")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--precisions", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="eager torch")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds; then skip the rest")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--suffix", default="", help="appended to the file name: _SUFFIX")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("accelerator_torch: torch is not installed; skipped (nothing written).")
        return 0
    if args.quick:
        args.batches, args.steps, args.rounds = [2], 2, 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    use_compile = not args.no_compile and not args.quick
    results, skipped, start = {}, [], time.perf_counter()
    for batch_size in args.batches:
        for precision in args.precisions:
            if time.perf_counter() - start > args.budget:
                skipped.append(f"{precision}_batch{batch_size}")
                print(f"{skipped[-1]}: skipped (past the {args.budget:.0f} s budget)", flush=True)
                continue
            torch.manual_seed(0)
            model = resnet18(torch.nn).to(device, memory_format=torch.channels_last)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            x = torch.randn(batch_size, 3, 32, 32, device=device)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (batch_size,), device=device)
            dtype = getattr(torch, precision)

            def step(model=model, opt=opt, x=x, y=y, dtype=dtype):
                with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss

            fn = torch.compile(step) if use_compile else step
            t0 = time.perf_counter()
            for _ in range(3):  # compile and warm up
                fn()
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            sync()
            warm_s = time.perf_counter() - t0
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                sync()
                times.append((time.perf_counter() - t0) / args.steps)
            med = sorted(times)[len(times) // 2]
            name = f"{precision}_batch{batch_size}"
            results[name] = {
                "seconds_per_step": times,
                "median_seconds_per_step": med,
                "images_per_second": batch_size / med,
                "warmup_s": warm_s,
            }
            print(f"{name}: torch train {batch_size / med:.0f} img/s", flush=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", kind).strip("_").lower()
    out = Path(args.out)
    jax_file = out / f"accelerator_{slug}{'_quick' if args.quick else ''}.json"
    ratios = {}
    if jax_file.exists():
        jax_results = json.loads(jax_file.read_text())["results"]
        for name, res in results.items():
            if name in jax_results:
                jax_ips = jax_results[name]["images_per_second"]["train_step"]
                ratios[name] = jax_ips / res["images_per_second"]
                print(f"{name}: JAX / torch images/s = {ratios[name]:.2f}")
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "accelerator_torch",
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "device": kind,
            "torch": torch.__version__,
        },
        "settings": {
            "model": "resnet18 (CIFAR stem), torch.nn",
            "channels_last": True,
            "autocast": "bfloat16 rows",
            "tf32": True,
            "torch_compile": use_compile,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
        },
        "results": results,
        "skipped": skipped,
        "jax_over_torch_images_per_second": ratios,
    }
    suffix = ("_quick" if args.quick else "") + (f"_{args.suffix}" if args.suffix else "")
    path = out / f"accelerator_torch_{slug}{suffix}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
