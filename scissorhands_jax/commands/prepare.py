"""``scissorhands prepare``: download and prepare a tfds data set (needs TensorFlow)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands prepare``."""
    p = sub.add_parser(
        "prepare",
        help="download a tfds data set and write it as ArrayRecord (pip install '.[prepare]')",
        description="Downloads and prepares a tensorflow-datasets data set in the ArrayRecord "
        "format that train/unlearn/evaluate read without TensorFlow. Preparing needs "
        "TensorFlow: pip install tensorflow (or pip install '.[prepare]' in a clone). "
        "CelebA-HQ is a folder you "
        "provide (see scissorhands_jax/data/celeba_folder.py); digits10 needs nothing.",
    )
    p.add_argument("name", help="cifar10, cifar100 or svhn_cropped")
    p.add_argument("--data-dir", help="tfds data directory (default ~/tensorflow_datasets)")


def run(args: argparse.Namespace) -> int:
    """Prepares the data set; returns 0."""
    from scissorhands_jax.data.tfds_source import prepare_tfds

    if args.name == "digits10":
        print("digits10 ships inside scikit-learn; nothing to prepare.")
        return 0
    if args.name == "celeba_folder":
        raise ValueError(
            "CelebA-HQ cannot be downloaded by a script: build ROOT/train/<identity>/ and "
            "ROOT/test/<identity>/ from your copy and set data.data_dir (or --data-dir) to ROOT."
        )
    where = prepare_tfds(args.name, args.data_dir)
    print(f"prepared {args.name} (ArrayRecord) in {where}")
    return 0
