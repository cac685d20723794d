"""NER predictions map back to words by the tokenizer's word ids (issue 18): words that tokenize to nothing (a lone
emoji variation selector, zero-width characters) or that truncation cuts off never shift later predictions, so a
perfect model scores exactly 100 entity F1 through the harness's own reading, encoding, prediction and scoring."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from electra_bench.finetune import FinetuneSettings, encode, predict, score, word_first_pieces
from electra_bench.tasks import TASKS, load_split
from electra_bench.tokenizer import SPECIAL_TOKENS, load_tokenizer

NER = TASKS.get("conll2003")
# Each word type has one tag, so "predict the tag of the word whose first piece this is" is a perfect model.
WORDS = {"alice": "B-PER", "smith": "I-PER", "paris": "B-LOC", "acme": "B-ORG", "corp": "I-ORG",
         "euro": "B-MISC", "visited": "O", "in": "O", "and": "O", "the": "O", "##s": "O"}
EMPTY = ["\ufe0f", "\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad"]  # each tokenizes to no piece at all


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL_TOKENS, *WORDS]) + "\n")
    return load_tokenizer(vocab)


class PerfectTagger(nn.Module):
    """Logits one-hot at the gold tag of the word a token id belongs to (what a perfectly trained model outputs)."""

    def __init__(self, tokenizer):
        super().__init__()
        table = torch.full((len(tokenizer),), NER.labels.index("O"))
        for word, tag in WORDS.items():
            table[tokenizer.convert_tokens_to_ids(word)] = NER.labels.index(tag)
        self.table = table

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return nn.functional.one_hot(self.table[input_ids], len(NER.labels)).float() * 10  # [B, L, C]


def settings(max_len: int = 128) -> FinetuneSettings:
    return FinetuneSettings(lr=0, layerwise_decay=1, official_layer_decay=False, warmup_fraction=0, weight_decay=0,
                            adam_eps=1e-6, batch_size=4, epochs=1, max_seq_length=max_len, train_examples=None,
                            dev_examples=None, head="linear", double_unordered=False, precision="fp32",
                            device="cpu", seed=0)


def conll_root(tmp_path: Path) -> Path:
    """A CoNLL-2003 dev file whose sentences hold words with no word-piece before, between and after entities."""
    sentences = [
        [("Alice", "B-PER"), ("\ufe0f", "O"), ("Smith", "I-PER"), ("visited", "O"), ("Paris", "B-LOC")],
        [("\u200b", "O"), ("Acme", "B-ORG"), ("Corp", "I-ORG"), ("\u200d", "O"), ("and", "O"), ("Euro", "B-MISC")],
        [("the", "O"), ("Paris", "B-LOC"), *[(e, "O") for e in EMPTY], ("Alice", "B-PER"), ("Smith", "I-PER")],
        [("Euros", "B-MISC"), ("in", "O"), ("Acme", "B-ORG"), ("\ufe0f", "O")],
    ]
    folder = tmp_path / "conll2003"
    folder.mkdir(parents=True)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for sentence in sentences:
        lines += [f"{w} NNP B-NP {t}" for w, t in sentence] + [""]
    for name in ("train.txt", "validation.txt"):
        (folder / name).write_text("\n".join(lines))
    return tmp_path


def test_first_pieces_are_found_by_word_id():
    # word 1 has no piece, word 2 has two: counting first pieces in order would give word 1 the piece of word 2
    assert word_first_pieces([None, 0, 2, 2, 3, None], 4) == [1, -1, 2, 4]
    assert word_first_pieces([None, 0, None], 3) == [1, -1, -1]  # words 1 and 2 cut off by truncation


def test_a_perfect_model_scores_100_with_words_that_have_no_piece(tokenizer, tmp_path):
    ds = load_split(NER, "dev", conll_root(tmp_path), cache_dir=tmp_path / "cache")
    data = encode(NER, ds, tokenizer, 128)
    assert any(-1 in starts for starts in data.word_starts)  # the case under test is really there
    preds = predict(PerfectTagger(tokenizer), data, NER, settings())
    assert [len(p) for p in preds] == [len(t) for t in ds["tags"]]
    assert preds == list(ds["tags"])
    assert score(NER, preds, list(ds["tags"]))["entity_f1"] == 100.0


def test_truncated_words_are_predicted_o_and_the_rest_stay_aligned(tokenizer, tmp_path):
    ds = load_split(NER, "dev", conll_root(tmp_path), cache_dir=tmp_path / "cache")
    data = encode(NER, ds, tokenizer, 5)  # [CLS] + 3 pieces + [SEP]
    preds = predict(PerfectTagger(tokenizer), data, NER, settings(5))
    o = NER.labels.index("O")
    for gold, pred, starts in zip(ds["tags"], preds, data.word_starts):
        assert all(p == (g if t >= 0 else o) for g, p, t in zip(gold, pred, starts))


def test_training_labels_sit_on_first_pieces_only(tokenizer, tmp_path):
    ds = load_split(NER, "dev", conll_root(tmp_path), cache_dir=tmp_path / "cache")
    data = encode(NER, ds, tokenizer, 128)
    for tags, labels, starts in zip(ds["tags"], data.labels, data.word_starts):
        assert [labels[t] for t in starts if t >= 0] == [g for g, t in zip(tags, starts) if t >= 0]
        assert sum(x != -100 for x in labels) == sum(t >= 0 for t in starts)
