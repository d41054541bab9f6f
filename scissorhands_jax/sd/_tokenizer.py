"""CLIP's byte-level BPE tokenizer, read from a checkpoint's ``vocab.json`` and ``merges.txt``.

The steps of CLIP's tokenizer (Radford et al., 2021) as transformers' ``CLIPTokenizer``
runs them: Unicode NFC, whitespace runs -> one space, lower case; split by CLIP's regex
(the special tokens, English contractions, runs of letters, single digits, runs of other
non-space characters); map each piece's UTF-8 bytes to printable characters (GPT-2's
byte-to-unicode table), mark its last symbol with ``</w>`` and apply the merges in rank
order; then ``<|startoftext|>`` ids ``<|endoftext|>``, truncated and padded to 77.
The ``ftfy`` text repair that CLIP's reference code applies first is not done: text that
ftfy would change (mojibake, HTML entities) may tokenize differently.
"""

from __future__ import annotations

import functools
import json
import os
import unicodedata

import numpy as np

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@functools.cache
def _pattern():
    """CLIP's pre-tokenising pattern (Unicode classes need the ``regex`` package, loaded
    here so that importing the sd package does not need it)."""
    try:
        import regex
    except ImportError:
        raise ImportError(
            "the CLIP tokenizer needs the regex package: pip install 'scissorhands_jax[sd]'"
        ) from None
    return regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable bytes map to themselves, the rest to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class CLIPTokenizer:
    """Prompts -> (B, max_length) int32 token ids.

    Args:
      vocab: token -> id (``vocab.json``).
      merges: merge rules in rank order, each a pair of symbols (``merges.txt``).
      max_length: ids per prompt, start and end tokens included (77 in SD v1).
      pad_token: the padding token (``<|endoftext|>`` in SD v1, ``!`` in some later models).
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        max_length=77,
        pad_token: str = EOS,
    ):
        for token in (BOS, EOS, pad_token):
            if token not in vocab:
                raise ValueError(f"CLIPTokenizer: the vocabulary has no {token!r}")
        self.vocab, self.max_length = vocab, max_length
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_table = bytes_to_unicode()
        self.bos, self.eos, self.pad = vocab[BOS], vocab[EOS], vocab[pad_token]
        self._cache = {BOS: [BOS], EOS: [EOS]}

    def bpe(self, piece: str) -> list[str]:
        """One pre-tokenized piece (byte-mapped) -> its BPE symbols."""
        if piece in self._cache:
            return self._cache[piece]
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[piece] = word
        return word

    def encode(self, text: str) -> list[int]:
        """One prompt -> its ids without start/end tokens, truncation or padding."""
        text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
        ids = []
        for piece in _pattern().findall(text):
            if piece not in (BOS, EOS):
                piece = "".join(self.byte_table[b] for b in piece.encode("utf-8"))
            for symbol in self.bpe(piece):
                if symbol not in self.vocab:
                    raise ValueError(f"CLIPTokenizer: {symbol!r} is not in the vocabulary")
                ids.append(self.vocab[symbol])
        return ids

    def __call__(self, prompts: str | list[str]) -> np.ndarray:
        """Prompts -> (B, max_length) ids: start, up to max_length - 2 tokens, end, padding."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        out = np.full((len(prompts), self.max_length), self.pad, np.int32)
        for row, prompt in enumerate(prompts):
            ids = [self.bos, *self.encode(prompt)[: self.max_length - 2], self.eos]
            out[row, : len(ids)] = ids
        return out


def load_tokenizer(folder: str | os.PathLike, max_length: int | None = None) -> CLIPTokenizer:
    """The tokenizer of a checkpoint's ``tokenizer/`` folder (``vocab.json``, ``merges.txt``).

    ``max_length`` (at most 77) and the padding token come from ``tokenizer_config.json``
    where it has them (``model_max_length``, ``pad_token``), else 77 and ``<|endoftext|>``.

    Raises:
      ValueError: a file is missing or unreadable.
    """
    folder = os.fspath(folder)
    paths = {n: os.path.join(folder, n) for n in ("vocab.json", "merges.txt")}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise ValueError(f"load_tokenizer: no {name} in {folder!r} (a tokenizer/ folder)")
    with open(paths["vocab.json"], encoding="utf-8") as f:
        vocab = json.load(f)
    with open(paths["merges.txt"], encoding="utf-8") as f:
        lines = f.read().split("\n")
    # the first line is a version header; the file may end without a newline
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    if any(len(m) != 2 for m in merges):
        raise ValueError(f"load_tokenizer: {paths['merges.txt']!r} has lines that are not pairs")
    pad, length = EOS, 77
    config_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        pad = config.get("pad_token") or pad
        pad = pad["content"] if isinstance(pad, dict) else pad
        # some configs mean "unbounded" by a huge number; CLIP's positions stop at 77
        length = min(int(config.get("model_max_length", length)), length)
    return CLIPTokenizer(vocab, merges, max_length or length, pad)
