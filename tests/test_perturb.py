"""Dev-set perturbations (electra_bench/perturb.py) and the robustness metrics (electra_bench/robustness.py).

The contract tests run over every registered perturbation kind (adding a kind means adding its unit measure in
`UNITS` below, which a test enforces): rate achieved, word/label alignment for tagging, same seed -> same set,
different seed -> different set, special tokens untouched; plus entity_swap's label types, hand-computed drops and
AUC, and the generator checkpoint written beside the discriminator.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import tiny_model_config

from electra_bench.perturb import (
    PERTURBATIONS,
    Context,
    GeneratorSampler,
    choose,
    mentions,
    rng_for,
    train_mentions,
    typo,
)
from electra_bench.tasks import TASKS

CONLL = TASKS.get("conll2003")
LABELS = CONLL.labels
WORDS = ["the", "film", "was", "good", "bad", "saw", "in", "and", "a", "city", "game", "won", "lost", "team"]
ENTITIES = {"PER": [["alice"], ["bob", "smith"], ["carol"]], "LOC": [["paris"], ["new", "york"], ["london"]],
            "ORG": [["acme"], ["big", "bank", "corp"]], "MISC": [["french"], ["world", "cup"]]}
RATES = (0.05, 0.1, 0.2)


def tagged_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences of ordinary words and entity mentions (some adjacent), tags as ids into CoNLL-2003's labels."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 9)):
            if rng.random() < 0.35:
                typ = rng.choice(sorted(ENTITIES))
                mention = rng.choice(ENTITIES[typ])
                tokens += mention
                tags += [LABELS.index(f"B-{typ}")] + [LABELS.index(f"I-{typ}")] * (len(mention) - 1)
            else:
                tokens.append(rng.choice(WORDS))
                tags.append(0)
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def text_rows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [{"text_a": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))),
             "text_b": " ".join(rng.choice(WORDS) for _ in range(4)), "label": rng.randint(0, 1)} for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from electra_bench.tokenizer import SPECIAL_TOKENS, load_tokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = sorted(({w for w in WORDS} | {w for ms in ENTITIES.values() for m in ms for w in m}) - set(letters))
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + letters + [f"##{c}" for c in letters] + words) + "\n")
    return load_tokenizer(vocab)


@pytest.fixture(scope="module")
def sampler(tokenizer):
    import torch
    from transformers import ElectraConfig, ElectraForMaskedLM

    torch.manual_seed(0)
    cfg = ElectraConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=1, intermediate_size=32, max_position_embeddings=128)
    return GeneratorSampler(ElectraForMaskedLM(cfg).eval(), tokenizer.mask_token_id, tokenizer.all_special_ids)


@pytest.fixture(scope="module")
def ctx(tokenizer, sampler):
    train = tagged_rows(200, seed=7)
    return Context(tuple(sorted(set(tokenizer.all_special_ids))), len(tokenizer), LABELS, train_mentions(train, LABELS),
                   sampler)


def rows_for(kind: str) -> list[dict]:
    return tagged_rows(300) if "classification" not in PERTURBATIONS.get(kind).task_kinds else text_rows(300)


def encode(rows: list[dict], tokenizer):
    import datasets

    from electra_bench.finetune import encode as encode_ds
    from electra_bench.tasks import features_for

    spec = CONLL if "tokens" in rows[0] else TASKS.get("mrpc")
    return encode_ds(spec, datasets.Dataset.from_list(rows, features=features_for(spec)), tokenizer, 512)


def perturbed(kind: str, rows: list[dict], rate: float, seed: int, ctx: Context, tokenizer):
    """(rows after, encoded after) for any kind, at its level."""
    p, enc = PERTURBATIONS.get(kind), encode(rows, tokenizer)
    if p.level == "words":
        new = p.fn(rows, rate, rng_for(seed, kind), ctx)
        return new, encode(new, tokenizer)
    ids = p.fn(enc.input_ids, enc.token_type_ids, rate, rng_for(seed, kind), ctx)
    return rows, type(enc)(ids, enc.token_type_ids, enc.labels, enc.word_starts, enc.n_words)


# --- how much of each kind's units changed ---------------------------------------------------------------------

def _pieces(before, after, rows, ctx, tokenizer) -> tuple[int, int]:
    b, a = encode(before, tokenizer).input_ids, after.input_ids
    pairs = [(x, y) for s, t in zip(b, a) for x, y in zip(s, t) if x not in ctx.special_ids]
    return sum(x != y for x, y in pairs), len(pairs)


def _words(before, after, rows, ctx, tokenizer) -> tuple[int, int]:
    def words(rs):
        return [w for r in rs for c in ("tokens", "text_a", "text_b") if c in r
                for w in (r[c] if c == "tokens" else r[c].split(" "))]
    pairs = [(x, y) for x, y in zip(words(before), words(rows)) if len(x) >= 2 and any(ch.isalpha() for ch in x)]
    return sum(x != y for x, y in pairs), len(pairs)


def _mentions(before, after, rows, ctx, tokenizer) -> tuple[int, int]:
    def forms(rs):
        return [tuple(r["tokens"][s:e]) for r in rs for s, e, _ in mentions([LABELS[t] for t in r["tags"]])]
    b, a = forms(before), forms(rows)
    assert len(b) == len(a)
    return sum(x != y for x, y in zip(b, a)), len(b)


UNITS = {"random_token": _pieces, "generator": _pieces, "char_typo": _words, "entity_swap": _mentions}
KINDS = PERTURBATIONS.names()


def test_every_kind_has_a_unit_measure():
    assert set(UNITS) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate", RATES)
def test_rate_is_achieved(kind, rate, ctx, tokenizer):
    rows = rows_for(kind)
    new_rows, enc = perturbed(kind, rows, rate, 0, ctx, tokenizer)
    changed, total = UNITS[kind](rows, enc, new_rows, ctx, tokenizer)
    # exact up to rounding; entity_swap may skip a mention whose type has no other form (none here)
    assert total > 200 and abs(changed / total - rate) <= 1 / total + 1e-9, (changed, total)


@pytest.mark.parametrize("kind", [k for k in KINDS if "tagging" in PERTURBATIONS.get(k).task_kinds])
def test_tagging_words_and_labels_stay_aligned(kind, ctx, tokenizer):
    rows = tagged_rows(300)
    new_rows, enc = perturbed(kind, rows, 0.2, 0, ctx, tokenizer)
    for r, starts, n, labels in zip(new_rows, enc.word_starts, enc.n_words, enc.labels):
        assert len(r["tokens"]) == len(r["tags"]) == n == len(starts)  # every word kept exactly one first piece
        assert all(w for w in r["tokens"])
        assert [labels[t] for t in starts] == r["tags"]


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_set_other_seed_other_set(kind, ctx, tokenizer):
    rows = rows_for(kind)
    a = perturbed(kind, rows, 0.1, 0, ctx, tokenizer)
    b = perturbed(kind, rows, 0.1, 0, ctx, tokenizer)
    c = perturbed(kind, rows, 0.1, 1, ctx, tokenizer)
    assert a[0] == b[0] and a[1].input_ids == b[1].input_ids
    assert a[1].input_ids != c[1].input_ids
    assert rows == rows_for(kind)  # the input is not modified


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_are_never_touched_nor_proposed(kind, ctx, tokenizer):
    rows = rows_for(kind)
    clean = encode(rows, tokenizer).input_ids
    _, enc = perturbed(kind, rows, 0.2, 0, ctx, tokenizer)
    special, in_place = set(ctx.special_ids), PERTURBATIONS.get(kind).level == "pieces"
    for before, after in zip(clean, enc.input_ids):  # word kinds may change lengths: compare the specials in order
        assert [(t if in_place else 0, x) for t, x in enumerate(before) if x in special] == \
               [(t if in_place else 0, x) for t, x in enumerate(after) if x in special]


def _unit_values(kind: str, rows: list[dict], enc) -> list:
    """The values of the kind's units, in order: ids (pieces), words (char_typo), mention forms (entity_swap)."""
    if PERTURBATIONS.get(kind).level == "pieces":
        return [x for seq in enc.input_ids for x in seq]
    if kind == "entity_swap":
        return [tuple(r["tokens"][s:e]) for r in rows for s, e, _ in mentions([LABELS[t] for t in r["tags"]])]
    return [w for r in rows for c in ("tokens", "text_a", "text_b") if c in r
            for w in (r[c] if c == "tokens" else r[c].split(" "))]


@pytest.mark.parametrize("kind", ["random_token", "char_typo", "entity_swap"])
def test_changed_units_are_nested_across_rates(kind, ctx, tokenizer):
    """The context-free kinds change at rate 0.2 every unit they change at 0.1, and the same way."""
    rows = rows_for(kind)
    clean = _unit_values(kind, rows, encode(rows, tokenizer))
    low, high = (_unit_values(kind, *perturbed(kind, rows, r, 0, ctx, tokenizer)) for r in (0.1, 0.2))
    changed = [i for i, (c, lo) in enumerate(zip(clean, low)) if c != lo]
    assert changed and all(high[i] == low[i] for i in changed)
    assert sum(c != h for c, h in zip(clean, high)) > len(changed)


def test_entity_swap_keeps_label_types_and_draws_other_training_mentions(ctx):
    rows = tagged_rows(300)
    new = PERTURBATIONS.get("entity_swap").fn(rows, 0.5, rng_for(0, "entity_swap"), ctx)
    swapped = 0
    for before, after in zip(rows, new):
        mb = mentions([LABELS[t] for t in before["tags"]])
        ma = mentions([LABELS[t] for t in after["tags"]])
        assert [t for _, _, t in mb] == [t for _, _, t in ma]  # same types, same order
        for (s, e, typ), (s2, e2, _) in zip(mb, ma):
            form = tuple(after["tokens"][s2:e2])
            assert form in ctx.mentions[typ]
            swapped += form != tuple(before["tokens"][s:e])
            assert [LABELS[t] for t in after["tags"][s2:e2]] == [f"B-{typ}"] + [f"I-{typ}"] * (e2 - s2 - 1)
    assert swapped > 100


def test_mentions_read_bio_like_conlleval():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-ORG", "B-ORG", "O"]
    assert mentions(tags) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC"), (5, 7, "ORG"), (7, 8, "ORG")]


@pytest.mark.parametrize("word", ["ab", "aa", "hello", "Paris", "a.", "1996-08-30", "ZZ"])
def test_a_typo_always_changes_and_never_empties_a_word(word):
    rng = np.random.default_rng(0)
    for _ in range(200):
        out = typo(word, int(rng.integers(4)), float(rng.random()), int(rng.integers(26)))
        assert out and out != word and " " not in out and abs(len(out) - len(word)) <= 1


def test_choose_is_exact_and_nested():
    a = choose(1000, 0.1, np.random.default_rng(3))
    b = choose(1000, 0.2, np.random.default_rng(3))
    assert a.sum() == 100 and b.sum() == 200 and not (a & ~b).any()


def test_generator_refills_with_in_vocabulary_non_special_tokens_other_than_the_original(ctx, tokenizer):
    rows = text_rows(50)
    enc = encode(rows, tokenizer)
    new = PERTURBATIONS.get("generator").fn(enc.input_ids, enc.token_type_ids, 1.0, rng_for(0, "generator"), ctx)
    special = set(ctx.special_ids)
    for before, after in zip(enc.input_ids, new):
        assert all(y != x and y not in special and 0 <= y < ctx.vocab_size
                   for x, y in zip(before, after) if x not in special)


# --- metrics ---------------------------------------------------------------------------------------------------

def test_summary_drops_and_auc_by_hand():
    from electra_bench.robustness import summary

    out = summary({("random_token", 0.1): 80.0, ("random_token", 0.2): 70.0, ("char_typo", 0.1): 90.0,
                   ("char_typo", 0.2): 81.0}, 90.0, "accuracy", True)
    assert out["robust/random_token/0.1/accuracy"] == 80.0
    assert out["robust_drop/random_token/0.2"] == 20.0
    assert out["robust_rel_drop/random_token/0.1"] == pytest.approx(100 / 9)
    assert out["robust_auc/random_token"] == pytest.approx((0.1 * 85 + 0.1 * 75) / 0.2)  # 80
    assert out["robust_rel_drop/random_token"] == pytest.approx(50 / 3)  # mean of 11.1 and 22.2
    assert out["robust_rel_drop/char_typo"] == pytest.approx(5.0)  # (0 + 10) / 2
    assert out["robust_rel_drop/all"] == pytest.approx((50 / 3 + 5) / 2)


def test_summary_of_a_lower_is_better_metric_counts_a_rise_as_a_drop():
    from electra_bench.metrics import higher_is_better
    from electra_bench.robustness import summary

    out = summary({("char_typo", 0.5): 3.0}, 2.0, "loss", False)
    assert out["robust_drop/char_typo/0.5"] == 1.0 and out["robust_rel_drop/char_typo"] == 50.0
    assert not higher_is_better("robust_rel_drop/all", True) and higher_is_better("robust_auc/x", True)
    with pytest.raises(ValueError, match="did you mean 'robust_auc'"):
        higher_is_better("robust_acu/x", True)


# --- the generator is saved with each checkpoint -------------------------------------------------------------------

def test_generator_is_saved_beside_the_discriminator_and_reloads(tmp_path, tokenizer):
    import torch
    from transformers import AutoModelForMaskedLM

    from electra_bench.build import build_objective
    from electra_bench.pretrain import GENERATOR_DIR, save_generator
    from electra_bench.schema import PretrainConfig
    from electra_bench.units import vocab_of

    for objective_name, saved in (("mlm", False), ("electra", True)):  # MLM has no generator
        objective = build_objective(tiny_model_config(), PretrainConfig(objective=objective_name), vocab_of(tokenizer))
        save_generator(objective, tokenizer, tmp_path / objective_name)
        assert (tmp_path / objective_name / GENERATOR_DIR / "config.json").is_file() == saved
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "electra" / GENERATOR_DIR).state_dict()
    ours = objective.generator.model.state_dict()
    assert ours and all(torch.equal(loaded[k], v) for k, v in ours.items())


def test_a_generator_missing_from_an_older_checkpoint_is_exported_from_its_state(tmp_path, tokenizer):
    import torch
    from transformers import AutoModelForMaskedLM

    from electra_bench.build import build_objective
    from electra_bench.pretrain import GENERATOR_DIR
    from electra_bench.schema import CorpusConfig, FinetuneConfig, RunConfig
    from electra_bench.units import export_generator, vocab_of

    run = RunConfig(model=tiny_model_config(), corpus=CorpusConfig(max_seq_length=64),  # fits its 64 positions
                    finetune=FinetuneConfig(max_seq_length=64))
    objective = build_objective(run.model, run.pretrain, vocab_of(tokenizer))
    ckpt = tmp_path / "checkpoint-100pct"
    objective.encoder().save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    torch.save({"model": objective.state_dict()}, tmp_path / "state.pt")
    export_generator(run, tmp_path, ckpt)
    loaded = AutoModelForMaskedLM.from_pretrained(ckpt / GENERATOR_DIR).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in objective.generator.model.state_dict().items())


# --- end to end -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_suite_with_a_robustness_section_end_to_end(tmp_path):
    """A tiny suite through the CLI: records carry the robustness metrics, MLflow has robust/<kind>/<rate>/<metric>,
    table.md has the robustness section and verdict, robustness.png is written, the generator was saved."""
    from mlflow.tracking import MlflowClient
    from test_suite_e2e import SUITE, make_data_root

    from electra_bench import cli
    from electra_bench.results import read_records

    make_data_root(tmp_path / "data")
    text = SUITE.format(root=tmp_path / "data", work=tmp_path / "work", results=tmp_path / "results")
    text = text.replace("name: e2e", "name: robust").replace("seeds: [0, 1]", "seeds: [0]")
    text += ("robustness: {rates: [0.1, 0.3]}\ntable:\n  claims:\n    - {name: degrades less, better: ELECTRA, "
             "worse: random init, task: conll2003, metric: robust_rel_drop/all}\n")
    (tmp_path / "robust.yaml").write_text(text)
    assert cli.main(["run", str(tmp_path / "robust.yaml"), "--no-progress"]) == 0
    out = tmp_path / "results" / "robust"
    ft = [r for r in read_records(out / "records.jsonl") if r["unit"] == "finetune"]
    assert len(ft) == 4
    for r in ft:
        kinds = ["random_token", "generator", "char_typo"] + (["entity_swap"] if r["task"] == "conll2003" else [])
        for kind in kinds:
            for rate in ("0.1", "0.3"):
                assert f"robust/{kind}/{rate}/{r['headline_metric']}" in r["metrics"]
                assert f"robust_drop/{kind}/{rate}" in r["metrics"]
            assert f"robust_auc/{kind}" in r["metrics"]
        assert not any("entity_swap" in m for m in r["metrics"]) or r["task"] == "conll2003"
    md = (out / "table.md").read_text()
    assert "## Robustness" in md and "### conll2003 (entity_f1)" in md and "**degrades less**" in md
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "work").rglob("checkpoint-100pct/generator/config.json"))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'work' / 'robust' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("robust").experiment_id],
                              filter_string="tags.stage = 'finetune' and tags.task = 'conll2003'")
    assert runs and "robust/entity_swap/0.3/entity_f1" in runs[0].data.metrics
