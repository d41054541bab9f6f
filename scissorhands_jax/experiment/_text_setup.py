"""A text-conditional generator for the generation pipeline: prompts, data, model.

A diffusion config with a ``text`` section (``text.templates`` set) trains the project's
Stable Diffusion UNet conditioned on the project's CLIP text encoder, both tiny and
trained jointly from scratch, in pixel space, on prompts written from templates:
``"a handwritten {name}"`` gives ``"a handwritten seven"`` for class 7 (``{digit}``
gives ``"7"``). Three kinds of template:

- ``templates``: every class's training prompts;
- ``paraphrases``: trained for every class but the forgotten one, so their wording is
  known to the model, yet never met with the forgotten concept;
- ``heldout``: never trained with any class; their words must all be in the vocabulary
  of the training prompts (a :class:`~scissorhands_jax.sd.WordTokenizer`).

The pipeline's commands see a prompt as a class-like label: the index of the prompt in
:attr:`PromptBook.table` (the null label, the table's length, is the empty prompt, the
unconditional input of classifier-free guidance). The network looks the label's token
ids up and encodes them, so the conditioning is the text alone; held-out prompts reach
the model only as new sequences of known words. Each training image gets one of its
class's training prompts, drawn afresh every epoch as a pure function of the epoch key.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Batch, BatchSource, PRNGKey
from scissorhands_jax.diffusion.data import GenerationData
from scissorhands_jax.diffusion.model import DiffusionModel, NoisedSource, diffusion_model
from scissorhands_jax.diffusion.schedule import make_schedule
from scissorhands_jax.sd import CLIPTextEncoder, TextConfig, UNet, UNetConfig, WordTokenizer

SETS = ("train", "paraphrase", "heldout")
"""The prompt sets of the forgotten class that the evaluation compares."""


def _expand(templates, names: list[str], digit: int, where: str) -> list[str]:
    out = []
    for template in templates:
        try:
            if "{name}" in template:
                out += [template.format(name=n, digit=digit) for n in names]
            else:
                out.append(template.format(digit=digit))
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"text.{where}: template {template!r} is malformed ({err!r}); only the "
                "fields {name} and {digit} are filled in."
            ) from None
    return list(dict.fromkeys(out))


@dataclasses.dataclass(frozen=True)
class PromptBook:
    """Every prompt of a text-conditional run, indexed.

    Attributes:
      table: the prompts, each class's training prompts first (class order), then the
        paraphrases not trained (the forgotten class's), then every class's held-out
        prompts; a label is an index into it.
      classes: the class each prompt of ``table`` names.
      train: per class, the indices of its training prompts.
      paraphrase: per class, the indices of its paraphrase prompts.
      heldout: per class, the indices of its held-out prompts.
      tokenizer: the word tokenizer over the training prompts' words.
    """

    table: tuple[str, ...]
    classes: tuple[int, ...]
    train: tuple[tuple[int, ...], ...]
    paraphrase: tuple[tuple[int, ...], ...]
    heldout: tuple[tuple[int, ...], ...]
    tokenizer: WordTokenizer = dataclasses.field(compare=False, repr=False)

    @property
    def null_label(self) -> int:
        """The label of the empty prompt."""
        return len(self.table)

    def token_table(self) -> np.ndarray:
        """(len(table) + 1, length) int32 ids of every prompt, the empty prompt last."""
        return self.tokenizer([*self.table, ""])

    def prompts(self, indices) -> list[str]:
        return [self.table[i] for i in indices]


def prompt_book(text: dict, num_classes: int, forget_class: int) -> PromptBook:
    """The :class:`PromptBook` of a config's ``text`` section.

    Raises:
      ValueError: ``names`` without one list per class, a malformed template, a held-out
        or paraphrase prompt that is also a training prompt of the class, an unknown word
        in an evaluation prompt (named), or a prompt longer than ``context_length``.
    """
    names = text["names"]
    if not isinstance(names, list | tuple) or len(names) != num_classes:
        raise ValueError(
            f"text.names needs one list of words per class ({num_classes}), got {names!r}."
        )
    names = [[n] if isinstance(n, str) else list(n) for n in names]
    train, para, held = [], [], []
    for k in range(num_classes):
        base = _expand(text["templates"], names[k], k, "templates")
        p = _expand(text["paraphrases"] or [], names[k], k, "paraphrases")
        train.append(base if k == forget_class else list(dict.fromkeys(base + p)))
        para.append(p)
        held.append(_expand(text["heldout"] or [], names[k], k, "heldout"))
    trained = {p for ps in train for p in ps}
    for k in range(num_classes):
        clash = sorted(set(held[k]) & trained)
        if clash:
            raise ValueError(
                f"text.heldout: {clash} are training prompts; held-out prompts must be new "
                "wordings, never trained."
            )
    clash = sorted(set(para[forget_class]) & set(train[forget_class]))
    if clash:
        raise ValueError(
            f"text.paraphrases: {clash} are also written by text.templates for the forgotten "
            "class; a paraphrase must be a wording the class never had in training."
        )
    tokenizer = WordTokenizer(sorted(trained), int(text["context_length"]))
    table, classes = [], []

    def add(prompts, k):
        out = []
        for p in prompts:
            if p not in table:
                table.append(p)
                classes.append(k)
            out.append(table.index(p))
        return tuple(out)

    train_ix = tuple(add(train[k], k) for k in range(num_classes))
    para_ix = tuple(add(para[k], k) for k in range(num_classes))
    held_ix = tuple(add(held[k], k) for k in range(num_classes))
    book = PromptBook(tuple(table), tuple(classes), train_ix, para_ix, held_ix, tokenizer)
    book.token_table()  # every prompt in the vocabulary and short enough: refused now
    return book


def check_text(cfg: dict) -> None:
    """Refuses a bad ``text`` section when the config is loaded, before any directory is
    written: builds its :class:`PromptBook` (one class per entry of ``text.names``).

    Raises:
      ValueError: see :func:`prompt_book`; also ``text.names`` missing.
    """
    names = cfg["text"]["names"]
    if not isinstance(names, list | tuple) or not names:
        raise ValueError(
            "text.names is required with text.templates: one list of words per class, "
            "e.g. [['zero', 'nought'], ['one'], ...]."
        )
    prompt_book(cfg["text"], len(names), cfg["data"]["forget_class"])


def check_text_method(cfg: dict, method: str) -> None:
    """Refuses a method whose forget term needs an anchor class (SalUn, the anchor
    recipe): on a text-conditional run a label is a prompt index, so ``"next"`` or a
    class index would name a prompt, not a concept.

    Raises:
      ValueError: such a method, naming the ones that run.
    """
    section = cfg[method]
    if method == "salun" or section.get("objective") == "anchor":
        raise ValueError(
            f"--method {method}: its anchor is a class label, and on a text-conditional run "
            "(text.templates set) labels are prompt indices; use scissorhands (objective "
            "'contrast') or finetune."
        )


@dataclasses.dataclass(frozen=True)
class PromptLabels:
    """A :data:`BatchSource` that replaces each class label of ``source``'s batches by
    the index of one of that class's training prompts, drawn uniformly; a pure function
    of the epoch key (the key of ``source`` and the draws are split from it).

    Attributes:
      source: batches of ``{"image", "label"}`` with class labels.
      choices: (K, M) int32, row k the prompt indices of class k (padded by repetition).
      counts: (K,) int32, how many of row k are real.
    """

    source: BatchSource
    choices: np.ndarray
    counts: np.ndarray

    @property
    def num_batches(self) -> int | None:
        return getattr(self.source, "num_batches", None)

    def __call__(self, key: PRNGKey) -> Iterator[Batch]:
        k_data, k_words = jax.random.split(key)
        bits = np.asarray(jax.random.key_data(k_words), np.uint32).ravel()
        rng = np.random.default_rng(bits.tolist())
        for batch in self.source(k_data):
            labels = np.asarray(batch["label"], np.int64)
            pick = (rng.random(labels.shape) * self.counts[labels]).astype(np.int64)
            yield {**batch, "label": self.choices[labels, pick].astype(np.int32)}


def prompt_labels(source: BatchSource, per_class) -> PromptLabels:
    """:class:`PromptLabels` over ``source`` with ``per_class[k]`` the prompts of class k."""
    width = max(len(c) for c in per_class)
    choices = np.array([[c[i % len(c)] for i in range(width)] for c in per_class], np.int32)
    return PromptLabels(source, choices, np.array([len(c) for c in per_class], np.int32))


@dataclasses.dataclass(frozen=True)
class TextGenerationData(GenerationData):
    """:class:`~scissorhands_jax.diffusion.data.GenerationData` whose generator sources
    carry prompt labels (indices into ``prompts.table``); the judge's views keep the
    class labels."""

    prompts: PromptBook | None = None

    def source(self, part, batch_size, *, flip=False, shuffle=True) -> NoisedSource:
        images = super().source(part, batch_size, flip=flip, shuffle=shuffle)
        return NoisedSource(prompt_labels(images.source, self.prompts.train))


def text_data(cfg: dict, data: GenerationData) -> TextGenerationData:
    """``data`` with the prompts of ``cfg["text"]``."""
    book = prompt_book(cfg["text"], data.num_classes, data.forget_class)
    return TextGenerationData(data.dataset, data.forget_class, data.factor, book)


class TextUNet(nn.Module):
    """The SD UNet conditioned on the CLIP text encoder's last hidden state of a prompt
    looked up by label: ``(x_t, t, label, train) -> ε`` (no dropout, so ``train`` is
    unused). Parameters: ``text/...`` (the encoder) and ``unet/...``."""

    unet: UNetConfig
    text: TextConfig
    tokens: tuple[tuple[int, ...], ...]

    @nn.compact
    def __call__(self, x, t, labels, train=False):
        del train
        ids = jnp.asarray(self.tokens, jnp.int32)[labels]
        context = CLIPTextEncoder(self.text, name="text")(ids)
        return UNet(self.unet, name="unet")(x, t, context)


def _configs(text: dict, book: PromptBook, channels: int) -> tuple[UNetConfig, TextConfig]:
    encoder = dict(text["encoder"] or {})
    enc = TextConfig(
        vocab_size=book.tokenizer.vocab_size,
        max_position_embeddings=book.tokenizer.length,
        **encoder,
    )
    unet = UNetConfig(
        in_channels=channels,
        out_channels=channels,
        cross_attention_dim=enc.hidden_size,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in (text["unet"] or {}).items()},
    )
    return unet, enc


def text_model(cfg: dict, data: TextGenerationData) -> DiffusionModel:
    """The config's text-conditional DDPM: a :class:`DiffusionModel` whose classes are
    the prompts of ``data.prompts`` (the null class is the empty prompt). Equal settings
    give the same object, so that commands run in one process share compiled programs."""
    return _text_model(
        json.dumps(cfg["text"], sort_keys=True),
        json.dumps(cfg["diffusion"], sort_keys=True),
        data.image_shape,
        data.prompts,
    )


@functools.lru_cache(maxsize=4)
def _text_model(text: str, diffusion: str, image_shape, book: PromptBook) -> DiffusionModel:
    text, diffusion = json.loads(text), json.loads(diffusion)
    unet, enc = _configs(text, book, image_shape[-1])
    module = TextUNet(unet, enc, tuple(map(tuple, book.token_table().tolist())))
    s = diffusion["schedule"]
    schedule = make_schedule(
        s["kind"], s["num_timesteps"], beta_start=s["beta_start"], beta_end=s["beta_end"]
    )
    return diffusion_model(
        module,
        image_shape=image_shape,
        num_classes=len(book.table),
        schedule=schedule,
        p_uncond=float(diffusion["p_uncond"]),
    )


def describe(book: PromptBook, forget_class: int) -> dict[str, Any]:
    """The prompt sets of the forgotten class and the vocabulary, for the run's records."""
    return {
        "vocab": list(book.tokenizer.vocab),
        **{s: book.prompts(getattr(book, s)[forget_class]) for s in SETS},
    }
