"""CLIP's BPE tokenizer: hand-worked segmentations on a small vocabulary, and (where
transformers is installed) the same ids as transformers' ``CLIPTokenizer`` on the files."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("regex", reason="the CLIP pre-tokenisation regex needs the regex package")

from scissorhands_jax.sd import CLIPTokenizer, load_tokenizer  # noqa: E402
from scissorhands_jax.sd._tokenizer import bytes_to_unicode  # noqa: E402

MERGES = [
    ("h", "e"),
    ("l", "l"),
    ("he", "ll"),
    ("hell", "o</w>"),
    ("t", "h"),
    ("th", "e</w>"),
    ("c", "a"),
    ("ca", "t</w>"),
    ("'", "s</w>"),
    ("Ã", "©</w>"),  # é is the bytes c3 a9, printed as Ã ©
    ("a", "t</w>"),
    ("c", "at</w>"),  # ranked after "c a": "cat" becomes ca + t</w>, then cat</w>
    ("o", "n"),
    ("on", "e</w>"),
]


def vocabulary():
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in MERGES)]
    tokens = list(dict.fromkeys(tokens))
    return {t: i for i, t in enumerate([*tokens, "<|startoftext|>", "<|endoftext|>"])}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    (path / "vocab.json").write_text(json.dumps(vocabulary()), encoding="utf-8")
    merges = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n"
    (path / "merges.txt").write_text(merges, encoding="utf-8")
    return path


def test_bytes_to_unicode_is_a_bijection_onto_printable_characters():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"  # space is byte 32 -> 256 + 32
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_hand_worked_segmentation(folder):
    tok = load_tokenizer(folder)
    vocab = vocabulary()
    # lower-cased, split into: hello , the cat 's 4 2 café ! ; "café" is c a f Ã ©</w>
    want = ["hello</w>", ",</w>", "the</w>", "cat</w>", "'s</w>", "4</w>", "2</w>"]
    want += ["ca", "f", "Ã©</w>", "!</w>"]
    assert tok.encode("  Hello,\tthe CAT's 42 café! ") == [vocab[t] for t in want]
    ids = tok(["Hello", "one"])
    start, end = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    want_ids = [[start, vocab["hello</w>"], end], [start, vocab["one</w>"], end]]
    np.testing.assert_array_equal(ids[:, :3], want_ids)
    assert ids.shape == (2, 77) and ids.dtype == np.int32 and np.all(ids[:, 3:] == end)


def test_long_prompts_are_truncated_to_75_tokens_between_start_and_end(folder):
    tok = load_tokenizer(folder)
    ids = tok("one " * 100)[0]
    vocab = vocabulary()
    assert ids[0] == vocab["<|startoftext|>"] and ids[76] == vocab["<|endoftext|>"]
    assert np.all(ids[1:76] == vocab["one</w>"])


def test_missing_files_and_vocabularies_without_special_tokens_are_refused(folder, tmp_path):
    with pytest.raises(ValueError, match="no vocab.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="<\\|endoftext\\|>"):
        CLIPTokenizer({"<|startoftext|>": 0}, [])


PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "Hello, World!!! It's 2024... (really?) -- yes; 3.14159 & 100%",
    "café naïve résumé Ünïcödé, 東京 タワー, emoji 🐱🚀 and ½ ² Ⅻ",
    "  multiple   spaces\tand\nnewlines  ",
    "they'll've we're I'M you'd O'Neil's",
    "one " * 90,
]


def test_ids_equal_transformers_clip_tokenizer(folder):
    transformers = pytest.importorskip("transformers", reason="the reference tokenizer")
    ref = transformers.CLIPTokenizer.from_pretrained(str(folder))
    want = ref(PROMPTS, padding="max_length", max_length=77, truncation=True)["input_ids"]
    np.testing.assert_array_equal(load_tokenizer(folder)(PROMPTS), np.asarray(want))
