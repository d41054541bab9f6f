"""The text-conditional digits demo: word tokenizer, prompt sets, prompt-labelled data,
the prompt-conditioned model, hostile prompts, and the three commands end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scissorhands_jax import cli
from scissorhands_jax.experiment import generation as dif
from scissorhands_jax.experiment._text_setup import (
    PromptBook,
    check_text,
    prompt_book,
    prompt_labels,
)
from scissorhands_jax.sd._unet import REINIT_SELF_ATTENTION
from scissorhands_jax.sd._words import PAD, WordTokenizer

pytest.importorskip("regex")  # the sd extra: the text encoder's package imports it

CONFIG = str(
    Path(__file__).resolve().parents[1] / "scissorhands_jax" / "configs" / "digits_text_zero.py"
)
ZERO = {
    "train": ["zero", "nought", "a zero", "a nought", "a handwritten zero", "a handwritten nought",
              "the digit 0", "the number zero", "the number nought", "the handwritten digit 0",
              "a picture of a zero", "a picture of a nought", "a picture of the number zero",
              "a picture of the number nought", "zero written by hand", "nought written by hand"],
    "paraphrase": ["a drawing of the number zero", "a drawing of the number nought",
                   "a sketch of the digit 0"],
    "heldout": ["a sketch of a zero", "a sketch of a nought", "a handwritten digit 0"],
}  # fmt: skip
"""The forgotten class's prompts, written out by hand from the config's templates."""


def _cfg(*overrides: str) -> dict:
    return dif.load_generation_config(CONFIG, overrides=overrides)


def _book(cfg=None) -> PromptBook:
    cfg = cfg or _cfg()
    return prompt_book(cfg["text"], 10, cfg["data"]["forget_class"])


# ---------------------------------------------------------------- tokenizer


def test_word_ids_are_the_sorted_vocabulary_plus_one_and_pad_with_zero():
    tok = WordTokenizer(["the digit 7", "a handwritten seven"], length=4)
    # sorted: 7 a digit handwritten seven the  ->  ids 1..6
    assert tok.vocab == ("7", "a", "digit", "handwritten", "seven", "the")
    assert tok.vocab_size == 7
    ids = tok(["the digit 7", "A  Handwritten seven", ""])
    np.testing.assert_array_equal(ids, [[6, 3, 1, 0], [2, 4, 5, 0], [0, 0, 0, 0]])
    assert ids.dtype == np.int32 and PAD == 0


def test_an_unknown_word_is_refused_by_name():
    tok = WordTokenizer(["the digit 7"], length=4)
    with pytest.raises(ValueError, match=r"unknown word\(s\) \['nougat'\].*the digit 7|nougat"):
        tok(["the nougat 7"])
    with pytest.raises(ValueError, match="more than the context length 4"):
        tok(["the digit 7 7 7"])
    with pytest.raises(ValueError, match="no words"):
        WordTokenizer(["  "], length=4)


# ---------------------------------------------------------------- prompt sets


def test_the_forgotten_class_prompt_sets_are_the_hand_written_ones():
    book = _book()
    for name, prompts in ZERO.items():
        assert book.prompts(getattr(book, name)[0]) == prompts, name
    # class 3 trains its templates and the paraphrases; its held-out prompts are new
    assert book.prompts(book.train[3]) == [
        "three", "a three", "a handwritten three", "the digit 3", "the number three",
        "the handwritten digit 3", "a picture of a three", "a picture of the number three",
        "three written by hand", "a drawing of the number three", "a sketch of the digit 3",
    ]  # fmt: skip
    assert all(book.classes[i] == k for k in range(10) for i in book.train[k])


def test_held_out_prompts_are_never_trained_and_use_only_known_words():
    book = _book()
    trained = {book.table[i] for ix in book.train for i in ix}
    for k in range(10):
        assert not trained & set(book.prompts(book.heldout[k])), k
    assert not set(ZERO["paraphrase"]) & trained  # never trained with zero ...
    templates = {re.sub(r"\b(one|1)\b", "X", p) for p in book.prompts(book.train[1])}
    for p in ZERO["paraphrase"]:  # ... but its wording is trained for the other digits
        assert re.sub(r"\b(zero|nought|0)\b", "X", p) in templates, p
    vocab = set(book.tokenizer.vocab)
    assert {w for p in book.table for w in p.split()} <= vocab
    assert {"nought", "sketch"} <= vocab
    table = book.token_table()
    assert table.shape == (len(book.table) + 1, 6) and not table[-1].any()  # null: all pads


def test_the_paraphrase_and_heldout_sets_stay_disjoint_from_zero_training_prompts():
    book = _book()
    zero_train = set(book.prompts(book.train[0]))
    assert zero_train == set(ZERO["train"])
    for name in ("paraphrase", "heldout"):
        assert not set(book.prompts(getattr(book, name)[0])) & zero_train, name
    # and no zero prompt of any set is trained for another digit
    other = {book.table[i] for k in range(1, 10) for i in book.train[k]}
    assert not other & {p for ps in ZERO.values() for p in ps}


def test_the_class_word_of_every_evaluation_prompt_sits_where_a_training_prompt_has_it():
    # the text encoder is causal with learned positions: a word at a position never
    # trained with it would be a new token to the model, not a new wording
    at = lambda p: [i for i, w in enumerate(p.split()) if w in ("zero", "nought", "0")]  # noqa: E731
    trained = {i for p in ZERO["train"] for i in at(p)}
    assert trained == {0, 1, 2, 3, 4, 5}
    assert [at(p) for p in ZERO["paraphrase"]] == [[5], [5], [5]]
    assert [at(p) for p in ZERO["heldout"]] == [[4], [4], [3]]


def test_a_heldout_prompt_with_an_unknown_word_is_refused_at_load(tmp_path):
    with pytest.raises(ValueError, match="nougat"):
        _cfg("text.heldout=['a sketch of a nougat']")
    with pytest.raises(ValueError, match="are training prompts"):
        _cfg("text.heldout=['a handwritten {name}']")
    with pytest.raises(ValueError, match="text.names"):
        _cfg("text.names=['zero']*9")
    out = tmp_path / "run"
    argv = ["diffusion-train", CONFIG, "--smoke", "--out", str(out), "--no-progress"]
    assert cli.main([*argv, "--set", "text.heldout=['a sketch of a nougat']"]) == 2
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("method", ["salun", "scissorhands_anchor"])
def test_methods_with_a_class_anchor_are_refused(tmp_path, method):
    with pytest.raises(ValueError, match="labels are prompt indices"):
        dif.unlearn_generator(_cfg(), tmp_path, method)


def test_check_text_needs_names():
    cfg = _cfg()
    cfg["text"]["names"] = None
    with pytest.raises(ValueError, match="text.names is required"):
        check_text(cfg)


# ---------------------------------------------------------------- data and model


def test_every_image_gets_one_of_its_class_training_prompts_as_a_function_of_the_key():
    book = _book()
    labels = np.tile(np.arange(10), 200)
    source = lambda key: iter([{"image": np.zeros((2000, 1)), "label": labels}])  # noqa: E731
    src = prompt_labels(source, book.train)
    a = next(src(jax.random.key(0)))["label"]
    b = next(src(jax.random.key(0)))["label"]
    c = next(src(jax.random.key(1)))["label"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for k, i in zip(labels, a, strict=True):
        assert i in book.train[k]
    assert set(a[labels == 0]) == set(book.train[0])  # all 16 zero prompts drawn in 200 draws


def test_the_config_reinitialises_the_release_self_attention_blocks():
    cfg = _cfg()
    data = dif.build_data(cfg, progress=False)
    model = dif.build_model(cfg, data)
    shapes = jax.eval_shape(model.init, jax.random.key(0))[0]
    paths = [
        "/".join(str(k.key) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]
    ]
    hit = {
        p.rsplit("/attn1/", 1)[0] for p in paths if re.search(cfg["scissorhands"]["eligible"], p)
    }
    assert hit == {f"unet/{p.rsplit('/attn1', 1)[0]}" for p in REINIT_SELF_ATTENTION}
    assert model.num_classes == len(data.prompts.table)
    forget = next(data.source("forget", 16)(jax.random.key(0)))
    assert set(np.asarray(forget["label"])) <= set(data.prompts.train[0])


def test_the_prediction_depends_on_the_prompt_text():
    cfg = _cfg(
        "text.unet={'block_out_channels': [8, 8], 'layers_per_block': 1, 'attention_head_dim': 2,"
        " 'norm_num_groups': 4, 'down_block_types': ['CrossAttnDownBlock2D', 'DownBlock2D'],"
        " 'up_block_types': ['UpBlock2D', 'CrossAttnUpBlock2D']}",
        "text.encoder={'hidden_size': 8, 'intermediate_size': 8, 'num_hidden_layers': 1,"
        " 'num_attention_heads': 2}",
    )
    data = dif.build_data(cfg, progress=False)
    model = dif.build_model(cfg, data)
    params, _ = model.init(jax.random.key(0))
    book = data.prompts
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    labels = jnp.array([book.train[0][0], book.train[0][0], book.null_label])
    eps = model.eps(params, x[:1].repeat(3, 0), jnp.array([5, 5, 5]), labels)
    np.testing.assert_allclose(eps[0], eps[1], atol=0)  # the same prompt, the same ε
    assert float(jnp.max(jnp.abs(eps[0] - eps[2]))) > 1e-4  # the empty prompt differs


def test_each_set_and_each_other_class_gets_n_samples_its_prompts_taking_turns():
    from scissorhands_jax.experiment._text_eval import taking_turns

    got = taking_turns([(1, 2, 3), (), (7,), (4, 5)], 5)
    np.testing.assert_array_equal(got, [1, 2, 3, 1, 2, 7, 7, 7, 7, 7, 4, 5, 4, 5, 4])
    assert got.dtype == np.int32


def test_set_shares_by_hand():
    from scissorhands_jax.experiment._text_eval import set_shares

    labels = np.array([0, 0, 1, 1, 2, 2, 2, 5])
    called = np.array([True, False, True, True, False, False, True, True])
    sets = {"train": (0, 1), "paraphrase": (2,), "heldout": ()}
    # train: 3 of 4 samples called 0; paraphrase: 1 of 3; no held-out prompt, no column
    assert set_shares(called, labels, sets) == {
        "forget_share": 75.0,
        "paraphrase_share": pytest.approx(100 / 3),
    }


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_three_commands_run_on_tiny_settings(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = [
        "data.limit_train=200",
        "data.limit_test=100",
        "text.unet={'block_out_channels': [8, 8], 'layers_per_block': 1, 'attention_head_dim':"
        " 2, 'norm_num_groups': 4, 'down_block_types': ['CrossAttnDownBlock2D', 'DownBlock2D'],"
        " 'up_block_types': ['UpBlock2D', 'CrossAttnUpBlock2D']}",
        "text.encoder={'hidden_size': 8, 'intermediate_size': 8, 'num_hidden_layers': 1,"
        " 'num_attention_heads': 2}",
    ]
    sets = [x for item in tiny for x in ("--set", item)]
    common = [CONFIG, "--smoke", *sets, "--no-progress"]
    assert cli.main(["diffusion-train", *common, "--out", str(run)]) == 0
    for method in ("scissorhands", "finetune"):
        assert cli.main(["diffusion-unlearn", *common, "--run", str(run), "--method", method]) == 0
    assert cli.main(["diffusion-evaluate", *common, "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "paraphrase_share | heldout_share" in out
    payload = json.loads((run / "evaluation.json").read_text())
    assert [r["model"] for r in payload["rows"]] == [
        "retrain",
        "original",
        "scissorhands",
        "finetune",
    ]
    for row in payload["rows"]:
        for column in ("forget_share", "paraphrase_share", "heldout_share", "other_acc"):
            assert 0.0 <= row[column] <= 100.0
        assert np.isfinite(row["frechet"])
    assert payload["prompts"]["heldout"] == ZERO["heldout"]
    shares = payload["per_prompt_share"]["original"]  # 2 samples per set: its first prompts
    assert set(shares) == {ZERO[s][i] for s in ZERO for i in (0, 1)}
    log = json.loads((run / "scissorhands" / "log.json").read_text())
    assert 0 < log["mask_entries"]
    assert (run / "grid.png").stat().st_size > 0
