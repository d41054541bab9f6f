"""A word-level tokenizer whose vocabulary is the words of a fixed set of prompts.

For small text-conditional models trained on their own prompts (no BPE files needed):
a prompt is lower-cased and split on whitespace; each word maps to its index in the
sorted vocabulary plus one, and 0 pads every prompt to the same length. The empty prompt
is all padding, the unconditional input of classifier-free guidance. A word outside the
vocabulary is refused by name: the model never saw it, so its embedding would mean nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PAD = 0
"""The id of the padding token (and of every position of the empty prompt)."""


def words(prompt: str) -> list[str]:
    """The words of ``prompt``: lower case, split on whitespace."""
    return prompt.lower().split()


class WordTokenizer:
    """Prompts -> (B, length) int32 ids over the words of ``prompts``.

    Args:
      prompts: the prompts whose words make the vocabulary (the training prompts).
      length: ids per prompt (every prompt padded to it).

    Raises:
      ValueError: no words, or ``length`` < 1.

    Example::

        tok = WordTokenizer(["the digit 7", "a handwritten seven"], length=4)
        tok.vocab       # ('7', 'a', 'digit', 'handwritten', 'seven', 'the')
        tok(["the digit 7"])  # [[6, 3, 1, 0]]
    """

    def __init__(self, prompts: Iterable[str], length: int):
        vocab = sorted({w for p in prompts for w in words(p)})
        if not vocab:
            raise ValueError("WordTokenizer: the prompts hold no words; give the training prompts.")
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"WordTokenizer: length must be an integer >= 1, got {length!r}.")
        self.vocab: tuple[str, ...] = tuple(vocab)
        self.length = length
        self._ids = {w: i + 1 for i, w in enumerate(vocab)}

    @property
    def vocab_size(self) -> int:
        """Ids in use, padding included (the text encoder's embedding rows)."""
        return len(self.vocab) + 1

    def encode(self, prompt: str) -> list[int]:
        """The unpadded ids of one prompt.

        Raises:
          ValueError: a word outside the vocabulary (named), or more words than ``length``.
        """
        ws = words(prompt)
        unknown = [w for w in ws if w not in self._ids]
        if unknown:
            raise ValueError(
                f"prompt {prompt!r}: unknown word(s) {unknown}; the vocabulary is the "
                f"{len(self.vocab)} words of the training prompts ({', '.join(self.vocab)}): "
                "use only those, or add a training prompt with the word."
            )
        if len(ws) > self.length:
            raise ValueError(
                f"prompt {prompt!r} has {len(ws)} words, more than the context length "
                f"{self.length}; shorten it or raise the length."
            )
        return [self._ids[w] for w in ws]

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        """(B, length) int32 ids, padded with :data:`PAD`."""
        out = np.full((len(prompts), self.length), PAD, np.int32)
        for i, prompt in enumerate(prompts):
            ids = self.encode(prompt)
            out[i, : len(ids)] = ids
        return out
