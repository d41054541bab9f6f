"""Converts pytorch-fid's Inception checkpoint into the ``.npz`` that FID here reads.

Usage (needs ``torch``, only for reading the checkpoint)::

    # where downloads work; the file is about 95 MB
    wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    python -m scissorhands_jax.diffusion.convert_inception \\
        pt_inception-2015-12-05-6726825d.pth inception_fid.npz

The checkpoint is pytorch-fid's port of the TF graph ``inception-2015-12-05`` used by
the FID of Heusel et al. (2017). Both its own module names (``Mixed_5b.branch1x1.conv.weight``,
as in the ``.pth``) and those of pytorch-fid's ``InceptionV3`` wrapper
(``blocks.2.0.branch1x1.conv.weight``) are accepted; the classifier (``fc.*``) and
``num_batches_tracked`` are dropped. Kernels go from (out, in, kh, kw) to
(kh, kw, in, out); the key names of the output are listed in
:mod:`scissorhands_jax.diffusion.inception`.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from scissorhands_jax.diffusion.inception import FID_WEIGHTS_URL, expected_weight_shapes

# pytorch-fid's InceptionV3.blocks -> the Inception3 module names
_BLOCKS = {
    "0.0": "Conv2d_1a_3x3",
    "0.1": "Conv2d_2a_3x3",
    "0.2": "Conv2d_2b_3x3",
    "1.0": "Conv2d_3b_1x1",
    "1.1": "Conv2d_4a_3x3",
    **{f"2.{i}": n for i, n in enumerate(["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a"])},
    **{f"2.{i + 4}": f"Mixed_6{c}" for i, c in enumerate("bcde")},
    **{f"3.{i}": f"Mixed_7{c}" for i, c in enumerate("abc")},
}
_LEAVES = {
    "conv/kernel": "conv.weight",
    "bn/scale": "bn.weight",
    "bn/bias": "bn.bias",
    "bn/mean": "bn.running_mean",
    "bn/var": "bn.running_var",
}


def _canonical(name: str) -> str:
    if name.startswith("blocks."):
        i, j, rest = name[len("blocks.") :].split(".", 2)
        return f"{_BLOCKS.get(f'{i}.{j}', name)}.{rest}"
    return name


def convert_state_dict(state_dict: dict) -> dict[str, np.ndarray]:
    """pytorch-fid Inception ``state_dict`` (tensors or arrays) -> ``.npz`` arrays.

    Raises:
      ValueError: keys missing or unexpected, or shapes that are not the FID Inception's.
    """
    torch_arrays = {}
    for name, value in state_dict.items():
        name = _canonical(name)
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        if hasattr(value, "detach"):
            value = value.detach().cpu().float().numpy()
        torch_arrays[name] = np.asarray(value, np.float32)
    out, used = {}, set()
    for key, shape in expected_weight_shapes().items():
        block, layer, leaf = key.rsplit("/", 2)
        tname = f"{block.replace('/', '.')}.{_LEAVES[f'{layer}/{leaf}']}"
        if tname not in torch_arrays:
            continue
        used.add(tname)
        a = torch_arrays[tname]
        out[key] = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a
        if out[key].shape != shape:
            raise ValueError(
                f"convert_inception: {tname} has shape {a.shape}, which does not fit the FID "
                f"Inception's {key} {shape}; is this pytorch-fid's "
                f"pt_inception-2015-12-05 checkpoint ({FID_WEIGHTS_URL})?"
            )
    missing = sorted(set(expected_weight_shapes()) - set(out))
    extra = sorted(set(torch_arrays) - used)
    if missing or extra:
        raise ValueError(
            f"convert_inception: not the FID Inception: {len(missing)} weights missing "
            f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}); use "
            f"pytorch-fid's pt_inception-2015-12-05 checkpoint ({FID_WEIGHTS_URL})."
        )
    return out


def convert_checkpoint(pth_path: str | os.PathLike, npz_path: str | os.PathLike) -> str:
    """Reads pytorch-fid's ``.pth`` (with torch) and writes the ``.npz``; returns its path.

    Raises:
      ValueError: torch is not installed, the file is missing or unreadable, or it is not
        the FID Inception's weights.
    """
    try:
        import torch
    except ImportError as err:
        raise ValueError(
            "convert_inception needs torch to read the .pth (`pip install torch`, the CPU "
            "build is enough); only this conversion needs it."
        ) from err
    pth_path, npz_path = os.fspath(pth_path), os.fspath(npz_path)
    if not os.path.isfile(pth_path):
        raise ValueError(
            f"convert_inception: no file {pth_path!r}; download it from {FID_WEIGHTS_URL}."
        )
    try:
        state_dict = torch.load(pth_path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip or torch errors all mean: not a state_dict
        raise ValueError(f"convert_inception: cannot read {pth_path!r} with torch: {err}") from err
    if not isinstance(state_dict, dict):
        raise ValueError(
            f"convert_inception: {pth_path!r} holds a {type(state_dict).__name__}, not a "
            "state_dict."
        )
    arrays = convert_state_dict(state_dict)
    os.makedirs(os.path.dirname(os.path.abspath(npz_path)), exist_ok=True)
    np.savez(npz_path, **arrays)
    return npz_path if npz_path.endswith(".npz") else npz_path + ".npz"


def main(argv: list[str] | None = None) -> int:
    """``python -m scissorhands_jax.diffusion.convert_inception IN.pth OUT.npz``."""
    p = argparse.ArgumentParser(
        prog="python -m scissorhands_jax.diffusion.convert_inception",
        description="Convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth (from "
        f"{FID_WEIGHTS_URL}) into the .npz read by inception_fid_features. Needs torch.",
    )
    p.add_argument("pth", help="pytorch-fid's Inception state_dict (.pth)")
    p.add_argument("npz", help="output .npz")
    args = p.parse_args(argv)
    try:
        out = convert_checkpoint(args.pth, args.npz)
    except ValueError as err:
        p.exit(2, f"error: {err}\n")
    print(f"wrote {out} ({len(expected_weight_shapes())} arrays)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
