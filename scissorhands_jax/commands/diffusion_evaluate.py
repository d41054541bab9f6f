"""``scissorhands diffusion-evaluate``: generation metrics of every DDPM of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from scissorhands_jax.commands import _args, _legends


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands diffusion-evaluate``."""
    p = sub.add_parser(
        "diffusion-evaluate",
        help="forget-class share, other-class accuracy and Fréchet distance of every DDPM "
        "of a run; writes RUN/evaluation.json and PNG grids",
        description="Samples sample.per_class images per class from every model of the run "
        "(original, retrain, and each unlearned method present; the same initial noise "
        "for all), judges them with the run's classifier and writes RUN/evaluation.json, "
        "RUN/grid_<model>.png and RUN/before_after.png (original | unlearned models).",
    )
    _args.add_common_arguments(p, mesh=False)  # sampling runs on one device
    p.add_argument("--run", required=True, help="the run directory of diffusion-train")
    p.add_argument(
        "--fid-features",
        default=None,
        metavar="MODULE:FUNCTION",
        help="an importable features(images in [0, 1], NHWC) -> (N, D) function (overrides "
        "eval.fid_features): adds 'fid' to every row",
    )
    p.add_argument(
        "--inception-weights",
        default=None,
        metavar="NPZ",
        help="weights of the FID Inception-v3 (python -m "
        "scissorhands_jax.diffusion.convert_inception): adds the standard FID to every row",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing RUN/evaluation.json (and its PNG grids)",
    )


def feature_function(spec: str | None, inception_weights: str | None):
    """The ``features(images in [0, 1]) -> (N, D)`` of ``MODULE:FUNCTION`` or of the FID
    Inception-v3 weights, or None.

    Raises:
      ValueError: both given, a malformed or unimportable spec.
    """
    import importlib

    if spec and inception_weights:
        raise ValueError("give --fid-features or --inception-weights, not both.")
    if inception_weights:
        from scissorhands_jax.diffusion.inception import inception_fid_features

        return inception_fid_features(inception_weights)
    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--fid-features wants MODULE:FUNCTION, got {spec!r}.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--fid-features {spec}: {err}") from err


def run(args: argparse.Namespace) -> int:
    """Evaluates every model of the run; returns 0."""
    from scissorhands_jax.experiment import generation, sd_pipeline

    if sd_pipeline.is_sd_config(args.config):  # a Stable Diffusion recipe
        return sd_pipeline.evaluate_command(args)

    cfg = generation.load_generation_config(args.config, smoke=args.smoke, overrides=args.set,
                                            data_dir=args.data_dir)  # fmt: skip
    fid = feature_function(args.fid_features or cfg["eval"]["fid_features"], args.inception_weights)
    payload = generation.evaluate_generators(cfg, args.run, fid_features=fid,
                                             overwrite=args.overwrite,
                                             progress=not args.no_progress)  # fmt: skip
    print(_legends.under(generation.format_rows(payload["rows"]), _legends.DIFFUSION))
    print(f"wrote {Path(args.run) / 'evaluation.json'} and {', '.join(payload['files'])}")
    return 0
