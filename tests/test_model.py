"""Model: masking (GR pretrain_helpers.mask), RTD labels and losses (Paper §2, Table 5), weight tying (§3.2),
the generator size rule (§2.2 / GR get_generator_config), every objective and algorithm in the schema, the unigram
generator, two-stage and adversarial training (§3.2, App. F). Tiny networks, CPU only."""
import math
import typing

import pytest
import torch
import torch.nn.functional as F
from conftest import CLS, MASK, PAD, SEP, SPECIAL_IDS, UNK, VOCAB_SIZE, tiny_model_config
from pydantic import ValidationError
from torch import nn

from electra_bench.build import build_objective, disc_dims
from electra_bench.model.algorithms import ALGORITHMS, Adversarial, TwoStage
from electra_bench.model.generators import Proposal, UnigramGenerator
from electra_bench.model.masking import MASK_STYLES, apply_mask, max_predictions, select
from electra_bench.model.objectives import Batch, Vocab
from electra_bench.optim import make_optimizer
from electra_bench.schema import PretrainConfig
from electra_bench.sizes import PRESETS, Dims, generator_dims

TINY_VOCAB = Vocab(size=VOCAB_SIZE, mask_id=MASK, special_ids=SPECIAL_IDS)
V = TINY_VOCAB.size
SPECIALS = torch.tensor(TINY_VOCAB.special_ids)
OBJECTIVES = typing.get_args(PretrainConfig.model_fields["objective"].annotation)
ALGORITHM_NAMES = typing.get_args(PretrainConfig.model_fields["algorithm"].annotation)


# --- helpers ---------------------------------------------------------------------------------------------------

def random_batch(gen: torch.Generator, batch: int, length: int, special_rate: float = 0.1) -> Batch:
    """[CLS] tokens (with some [UNK]/[SEP]/[MASK] inside) [SEP] [PAD]...; ordinary tokens are 5..49."""
    ids = torch.randint(5, V, (batch, length), generator=gen)
    inner = torch.tensor([UNK, SEP, MASK])[torch.randint(3, (batch, length), generator=gen)]
    ids = torch.where(torch.rand(batch, length, generator=gen) < special_rate, inner, ids)
    lengths = torch.randint(2, length + 1, (batch,), generator=gen)
    ids[:, 0] = CLS
    for i, n in enumerate(lengths.tolist()):
        ids[i, n - 1] = SEP
        ids[i, n:] = PAD
    types = torch.zeros_like(ids)
    types[:, length // 2:] = 1
    types[ids == PAD] = 0
    return Batch(input_ids=ids, attention_mask=(ids != PAD).long(), token_type_ids=types)


def hand_batch() -> Batch:
    """Two rows with padding and two segments, written out by hand."""
    ids = torch.tensor([[CLS, 11, 12, 13, 14, SEP, 21, 22, 23, 24, 25, SEP],
                        [CLS, 31, 32, 33, 34, 35, 36, SEP, PAD, PAD, PAD, PAD]])
    types = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
                          [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    return Batch(input_ids=ids, attention_mask=(ids != PAD).long(), token_type_ids=types)


def pad_right(batch: Batch, extra: int) -> Batch:
    def pad(t):
        return F.pad(t, (0, extra), value=0)

    return Batch(pad(batch.input_ids), pad(batch.attention_mask), pad(batch.token_type_ids))


class FixedGenerator(nn.Module):
    """A stand-in generator: returns the original token (`mode="copy"`) or a different ordinary token
    (`mode="replace"`) at every selected slot, with a zero MLM loss; records the selection it was given."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode, self.sel = mode, None

    def forward(self, masked_ids, attention_mask, token_type_ids, sel, rng=None) -> Proposal:
        self.sel = sel
        samples = sel.targets.clone()
        if self.mode == "replace":
            samples = (sel.targets - 5 + 1) % (V - 5) + 5  # always an ordinary token != target
        zero = masked_ids.new_zeros((), dtype=torch.float32)
        return Proposal(samples, zero, None, None, None)


def build(objective="electra", model=None, **pretrain):
    torch.manual_seed(0)
    pre = PretrainConfig(objective=objective, **pretrain)
    counts = torch.arange(V, dtype=torch.float) if pre.generator_size == "unigram" else None
    return build_objective(model or tiny_model_config(), pre, TINY_VOCAB, counts)


def param_split(obj):
    """(generator-only, discriminator-only, shared) parameters of an ElectraObjective, by name."""
    g = dict(obj.generator.model.named_parameters())
    d = dict(obj.discriminator.named_parameters())
    d_ids = {id(p) for p in d.values()}
    g_ids = {id(p) for p in g.values()}
    g_only = {n: p for n, p in g.items() if id(p) not in d_ids}
    d_only = {n: p for n, p in d.items() if id(p) not in g_ids}
    shared = {n: p for n, p in d.items() if id(p) in g_ids}
    return g_only, d_only, shared


def snapshot(params: dict) -> dict:
    return {n: p.detach().clone() for n, p in params.items()}


def changed(before: dict, params: dict) -> set:
    return {n for n, p in params.items() if not torch.equal(before[n], p.detach())}


# --- masking ---------------------------------------------------------------------------------------------------

# (sequence length L, eligible tokens n, mask_prob) -> tokens selected. k = max(1, round(n p)) capped by
# K = int((p + 0.005) L) (GR max_predictions_per_seq), and never more than n. round() is half-to-even, as tf.round.
SELECT_CASES = [
    (40, 20, 0.15, 3),  # round(3.0)
    (40, 30, 0.15, 4),  # round(4.5) = 4 (half to even)
    (40, 2, 0.15, 1),  # round(0.3) = 0 -> at least 1
    (40, 0, 0.15, 0),  # nothing eligible: nothing selected
    (10, 8, 0.15, 1),  # round(1.2) = 1
    (12, 10, 0.15, 1),  # round(1.5) = 2, capped by K = int(1.86) = 1
    (128, 126, 0.15, 19),  # the paper's Small/Base setting: K = 19 at L = 128
    (128, 126, 0.25, 32),  # Large: 25% masking, K = int(0.255 * 128) = 32
]


@pytest.mark.parametrize("length,n_tokens,mask_prob,expected", SELECT_CASES)
def test_select_count_hand_cases(length, n_tokens, mask_prob, expected):
    ids = torch.full((1, length), PAD)
    ids[0, 0] = CLS
    ids[0, 1:n_tokens + 1] = torch.arange(n_tokens) % (V - 5) + 5
    if n_tokens + 1 < length:
        ids[0, n_tokens + 1] = SEP
    sel = select(ids, (ids != PAD).long(), SPECIALS, mask_prob, torch.Generator().manual_seed(0))
    assert int(sel.weights.sum()) == expected
    assert sel.positions.shape == (1, max_predictions(mask_prob, length))


def test_max_predictions_matches_official():
    assert max_predictions(0.15, 128) == 19  # electra-reference §7.1
    assert max_predictions(0.15, 512) == 79


@pytest.mark.parametrize("mask_prob", [0.15, 0.4])
def test_select_never_picks_special_or_pad_and_counts_per_row(mask_prob):
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        batch = random_batch(gen, 16, 24, special_rate=0.2)
        sel = select(batch.input_ids, batch.attention_mask, SPECIALS, mask_prob, gen)
        eligible = batch.attention_mask.bool() & ~torch.isin(batch.input_ids, SPECIALS)
        k_max = max_predictions(mask_prob, 24)
        for row in range(16):
            used = sel.positions[row][sel.weights[row].bool()]
            n = int(eligible[row].sum())
            assert len(used) == min(n, k_max, max(1, round(n * mask_prob)))
            assert len(set(used.tolist())) == len(used)  # no position twice
            assert eligible[row, used].all()  # never [CLS]/[SEP]/[MASK]/[UNK]/[PAD]
            assert torch.equal(sel.targets[row][sel.weights[row].bool()], batch.input_ids[row, used])


def test_select_is_uniform_over_eligible_positions():
    """Every eligible position is picked about equally often (uniform choice, Paper §2)."""
    gen = torch.Generator().manual_seed(2)
    ids = torch.tensor([[CLS] + list(range(5, 23)) + [SEP]]).repeat(4000, 1)  # 18 eligible: k = round(2.7) = 3
    sel = select(ids, torch.ones_like(ids), SPECIALS, 0.15, gen)
    assert (sel.weights.sum(1) == 3).all()
    hits = torch.bincount(sel.positions[sel.weights.bool()], minlength=20).float() / sel.weights.sum()
    assert hits[0] == 0 and hits[19] == 0
    assert torch.allclose(hits[1:19], torch.full((18,), 1 / 18), atol=0.012)


def test_selected_first_position_is_masked():
    ids = torch.tensor([list(range(5, 15)) + [PAD] * 30]).repeat(500, 1)  # no [CLS]: position 0 is eligible
    gen = torch.Generator().manual_seed(0)
    sel = select(ids, (ids != PAD).long(), SPECIALS, 0.15, gen)  # k = 2 of K = 6 slots: 4 unused per row
    masked = apply_mask(ids, sel, MASK, "electra", V, gen)
    first = ((sel.positions == 0) & sel.weights.bool()).any(1)
    assert first.sum() > 50
    assert (masked[first, 0] == MASK).float().mean() > 0.7  # 85% expected, as at every other position


# expected (p [MASK], p random other token, p unchanged) at the selected positions; hand-written from the paper
# and the GR code, not read from MASK_STYLES. A random token equals the original (or [MASK]) with chance 1/V.
MASK_STYLE_EXPECTED = {
    "electra": (0.85, 0.0, 0.15),  # GR pretrain_helpers.mask: 85% [MASK], 15% unchanged, no random token
    "bert": (0.8 + 0.1 / V, 0.1 * (V - 2) / V, 0.1 + 0.1 / V),  # 80/10/10 (Table 5 "BERT")
}


def test_mask_styles_cover_the_schema():
    styles = set(typing.get_args(PretrainConfig.model_fields["mask_style"].annotation)) - {"auto"}
    assert styles == set(MASK_STYLES) == set(MASK_STYLE_EXPECTED)


@pytest.mark.parametrize("style", sorted(MASK_STYLE_EXPECTED))
def test_apply_mask_proportions(style):
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, V, (1500, 64), generator=gen)
    sel = select(ids, torch.ones_like(ids), SPECIALS, 0.15, gen)
    masked = apply_mask(ids, sel, MASK, style, V, gen)
    chosen = torch.zeros_like(ids, dtype=torch.bool).scatter(1, sel.positions, sel.weights.bool())
    assert torch.equal(masked[~chosen], ids[~chosen])  # only selected positions change
    new, old = masked[chosen], ids[chosen]
    n = len(new)
    assert n > 10_000
    p_mask = (new == MASK).float().mean().item()
    p_same = (new == old).float().mean().item()
    p_random = ((new != MASK) & (new != old)).float().mean().item()
    want_mask, want_random, want_same = MASK_STYLE_EXPECTED[style]
    assert p_mask == pytest.approx(want_mask, abs=0.02)
    assert p_same == pytest.approx(want_same, abs=0.02)
    assert p_random == pytest.approx(want_random, abs=0.02)
    if want_random == 0:
        assert p_random == 0.0  # ELECTRA style never puts a random token
    assert ((masked >= 0) & (masked < V)).all()


# --- RTD labels and losses -------------------------------------------------------------------------------------

def test_rtd_labels_are_corrupted_ne_original_and_correct_samples_are_real(monkeypatch):
    obj = build("electra")
    gen_forward = obj.generator.forward

    def half_correct(masked_ids, attention_mask, token_type_ids, sel, rng=None):
        proposal = gen_forward(masked_ids, attention_mask, token_type_ids, sel, rng)
        forced = proposal.samples.clone()
        forced[:, ::2] = sel.targets[:, ::2]  # the generator "samples the right token" in even slots
        forced[:, 1::2] = (sel.targets[:, 1::2] - 5 + 1) % (V - 5) + 5  # and a wrong one in odd slots
        proposal.samples = forced
        return proposal

    monkeypatch.setattr(obj.generator, "forward", half_correct)
    batch = random_batch(torch.Generator().manual_seed(4), 8, 40, special_rate=0.0)
    sel, proposal, corrupted, labels = obj.corrupt(batch, torch.Generator().manual_seed(5))
    assert torch.equal(labels, (corrupted != batch.input_ids).float())
    used = sel.weights.bool()
    assert used[:, 0].all() and used[:, 1].any()  # both kinds of slot occur
    at_sel = labels.gather(1, sel.positions)
    assert (at_sel[:, ::2][used[:, ::2]] == 0).all()  # correct sample -> "real"
    assert (at_sel[:, 1::2][used[:, 1::2]] == 1).all()
    chosen = torch.zeros_like(labels, dtype=torch.bool).scatter(1, sel.positions, used)
    assert (labels[~chosen] == 0).all()
    assert torch.equal(corrupted.gather(1, sel.positions)[used], proposal.samples[used])


def test_generator_that_always_copies_produces_no_replaced_tokens():
    obj = build("electra")
    obj.generator = FixedGenerator("copy")
    out = obj(random_batch(torch.Generator().manual_seed(6), 8, 30), torch.Generator().manual_seed(0))
    assert out.stats["n_selected"] > 0
    assert out.stats["n_replaced"] == 0
    assert out.stats["disc_tp"] + out.stats["disc_fn"] == 0


def test_default_loss_weights_are_the_papers():
    pre = PretrainConfig()
    assert (pre.disc_weight, pre.gen_weight, pre.mask_prob) == (50.0, 1.0, 0.15)  # App. A, GR


@pytest.mark.parametrize("gen_weight,disc_weight", [(1.0, 50.0), (2.0, 10.0)])
def test_electra_loss_is_weighted_sum(gen_weight, disc_weight):
    obj = build("electra", gen_weight=gen_weight, disc_weight=disc_weight)
    out = obj(hand_batch(), torch.Generator().manual_seed(0))
    assert out.gen_loss > 0 and out.disc_loss > 0
    torch.testing.assert_close(out.loss.detach(), gen_weight * out.gen_loss + disc_weight * out.disc_loss)


def _expected_disc_loss(obj, batch, scored):
    """Mean BCE of D's logits against 'replaced' labels over the `scored` positions, labels from the fixed
    replacing generator (1 at the selected positions)."""
    sel = obj.generator.sel
    chosen = torch.zeros_like(batch.input_ids, dtype=torch.bool).scatter(1, sel.positions, sel.weights.bool())
    corrupted = torch.where(chosen, (batch.input_ids - 5 + 1) % (V - 5) + 5, batch.input_ids)
    with torch.no_grad():
        logits = obj.discriminator(input_ids=corrupted, attention_mask=batch.attention_mask,
                                   token_type_ids=batch.token_type_ids).logits
    bce = F.binary_cross_entropy_with_logits(logits, chosen.float(), reduction="none")
    mask = chosen if scored == "selected" else batch.attention_mask.bool()
    return bce[mask].mean(), int(mask.sum())


@pytest.mark.parametrize("objective,scored", [("electra", "non-pad"), ("electra_15", "selected")])
def test_disc_loss_scores_the_right_tokens(objective, scored):
    obj = build(objective).eval()
    obj.generator = FixedGenerator("replace")
    batch = hand_batch()
    out = obj(batch, torch.Generator().manual_seed(0))
    expected, n = _expected_disc_loss(obj, batch, scored)
    torch.testing.assert_close(out.disc_loss, expected)
    assert int(out.stats["n_scored"]) == n
    assert n == (int(out.stats["n_selected"]) if scored == "selected" else 20)  # 12 + 8 non-pad tokens


def test_disc_loss_ignores_padding():
    """Extra [PAD] columns change nothing: pads are neither attended to nor scored."""
    obj = build("electra").eval()
    obj.generator = FixedGenerator("copy")  # corrupted == input, whatever the mask: loss is mask-independent
    batch = hand_batch()
    a = obj(batch, torch.Generator().manual_seed(0))
    b = obj(pad_right(batch, 7), torch.Generator().manual_seed(0))
    assert a.disc_loss > 0
    torch.testing.assert_close(a.disc_loss, b.disc_loss, rtol=1e-5, atol=1e-6)
    assert a.stats["n_scored"] == b.stats["n_scored"] == 20


def test_no_gradient_from_discriminator_into_generator():
    obj = build("electra")
    g_only, d_only, shared = param_split(obj)
    assert g_only and d_only and shared  # tied embeddings: shared; G's encoder and heads: G only
    batch = hand_batch()

    obj.gen_weight = 0.0  # loss = disc_weight * disc_loss only
    obj(batch, torch.Generator().manual_seed(0)).loss.backward()
    leaked = [n for n, p in g_only.items() if p.grad is not None and p.grad.abs().sum() > 0]
    assert leaked == []
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d_only.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in shared.values())  # D trains the embeddings

    obj.zero_grad(set_to_none=True)  # positive control: with the MLM loss, G's own parameters do get gradient
    obj.gen_weight = 1.0
    obj(batch, torch.Generator().manual_seed(0)).loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g_only.values())


# --- weight tying (Paper §3.2) ---------------------------------------------------------------------------------

def test_tying_embeddings_shares_one_module_and_the_lm_head_is_the_shared_table():
    obj = build("electra", tying="embeddings")
    g, d = obj.generator.model, obj.discriminator
    assert g.electra.embeddings is d.electra.embeddings
    table = d.electra.embeddings.word_embeddings.weight
    assert g.generator_lm_head.weight is table
    assert g.generator_lm_head.weight.data_ptr() == table.data_ptr()
    assert g.electra.encoder is not d.electra.encoder


def test_tying_none_gives_distinct_tensors_but_g_keeps_its_own_input_output_tie():
    obj = build("electra", tying="none")
    g, d = obj.generator.model, obj.discriminator
    g_ptrs = {p.data_ptr() for p in g.parameters()}
    assert not g_ptrs & {p.data_ptr() for p in d.parameters()}
    # the generator's input and output embeddings are always tied, as in BERT (§2.1)
    assert g.generator_lm_head.weight is g.electra.embeddings.word_embeddings.weight


def test_tying_all_with_equal_sizes_is_one_encoder():
    obj = build("electra", tying="all", generator_size=1.0, model=tiny_model_config(intermediate_size=128))
    g, d = obj.generator.model, obj.discriminator
    assert g.electra is d.electra
    assert g.generator_lm_head.weight is d.electra.embeddings.word_embeddings.weight
    out = obj(hand_batch(), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)


INVALID_COMBINATIONS = [
    dict(tying="all", generator_size=0.25),  # tie all needs G and D of one size (§3.2)
    dict(algorithm="two_stage", generator_size=0.5),  # D is initialised from G
    dict(algorithm="adversarial", generator_size="unigram"),  # nothing to train
    dict(objective="mlm", algorithm="two_stage", generator_size=1.0),
    dict(generator_size=0),
    dict(generator_size=1.5),
    dict(mask_prob=1.5),
]


@pytest.mark.parametrize("fields", INVALID_COMBINATIONS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_invalid_pretrain_combinations_are_rejected(fields):
    with pytest.raises(ValidationError):
        PretrainConfig(**fields)


# --- generator size rule ---------------------------------------------------------------------------------------

# (discriminator dims, fraction) -> generator dims; hand-computed from GR get_generator_config: hidden =
# round(f H), FFN = round(f FFN) (= 4 hidden for the 4x presets, as GR; the paper scales FFN by the same multiplier),
# heads = hidden // 64 (at least 1), same depth, D's embedding size (shared).
SMALL, BASE, LARGE = Dims(256, 12, 4, 1024, 128), Dims(768, 12, 12, 3072, 768), Dims(1024, 24, 16, 4096, 1024)
GENERATOR_CASES = [
    (SMALL, 0.25, Dims(64, 12, 1, 256, 128)),  # Table 6, Small: 1/4
    (BASE, 1 / 3, Dims(256, 12, 4, 1024, 768)),  # Table 6, Base: 1/3
    (LARGE, 0.25, Dims(256, 24, 4, 1024, 1024)),  # Table 6, Large: 1/4
    (BASE, 0.5, Dims(384, 12, 6, 1536, 768)),
    (SMALL, 1.0, SMALL),
    (SMALL, 0.5, Dims(128, 12, 2, 512, 128)),
    # CPU scale, fewer than 64 dims per head: D's head size is kept (the docstring's 128-wide/2-head example)
    (Dims(128, 4, 2, 512, 128), 0.25, Dims(32, 4, 1, 128, 128)),
    (Dims(128, 4, 2, 512, 128), 0.5, Dims(64, 4, 1, 256, 128)),
    (Dims(32, 2, 2, 64, 16), 0.25, Dims(8, 2, 1, 16, 16)),  # FFN 2x hidden in D -> 2x in G
]


@pytest.mark.parametrize("disc,fraction,expected", GENERATOR_CASES)
def test_generator_dims_rule(disc, fraction, expected):
    assert generator_dims(disc, fraction) == expected


def test_presets_are_table_6():
    assert PRESETS["small"] == SMALL and PRESETS["base"] == BASE and PRESETS["large"] == LARGE


def test_built_generator_follows_the_rule():
    obj = build("electra", generator_size=0.25)
    cfg = obj.generator.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.embedding_size) == (8, 2, 1, 16, 16)
    assert obj.discriminator.config.hidden_size == 32
    assert disc_dims(tiny_model_config()) == Dims(32, 2, 2, 64, 16)


def test_full_size_generator_has_the_discriminators_dims():
    d = Dims(32, 2, 2, 64, 16)  # intermediate_size overridden to 2*hidden
    assert generator_dims(d, 1.0) == d


def test_two_stage_switch_works_with_custom_intermediate_size():
    obj = build("electra", algorithm="two_stage", generator_size=1.0, model=tiny_model_config(intermediate_size=64))
    TwoStage(obj, 0.5).start_stage_two()
    assert torch.equal(obj.discriminator.electra.encoder.layer[0].intermediate.dense.weight,
                       obj.generator.model.electra.encoder.layer[0].intermediate.dense.weight)


# --- every objective and algorithm -----------------------------------------------------------------------------

def test_objective_literal_is_the_papers_table_5():
    assert set(OBJECTIVES) == {"electra", "electra_15", "replace_mlm", "all_tokens_mlm", "mlm"}
    assert set(ALGORITHM_NAMES) == set(ALGORITHMS)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("generator_size", [0.25, "unigram"])
def test_every_objective_runs_forward_and_backward(objective, generator_size):
    obj = build(objective, generator_size=generator_size)
    out = obj(hand_batch(), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    grads = [p.grad for p in obj.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert out.stats["n_selected"] == 2  # row 1: 9 eligible, round(1.35) = 1; row 2: 6, round(0.9) = 1
    if objective in ("electra", "electra_15"):
        assert out.disc_loss > 0
    if objective == "mlm":
        assert out.disc_loss == 0


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
def test_every_algorithm_takes_a_step(algorithm):
    gen_size = 1.0 if algorithm == "two_stage" else 0.25
    obj = build("electra", algorithm=algorithm, generator_size=gen_size, model=tiny_model_config(intermediate_size=128))
    algo = TwoStage(obj, 0.5) if algorithm == "two_stage" else ALGORITHMS[algorithm](obj)
    algo.on_step(0, 4)
    out = algo.loss(hand_batch(), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.parameters())


def test_all_tokens_mlm_copy_mechanism_by_hand():
    """One eligible token; p(x_t) = D 1[x_t = input_t] + (1 - D) softmax(x_t), with D and the softmax pinned:
    the copy head outputs D = 0.3 everywhere, the LM head a softmax with logit log 3 on token 7 and 0 elsewhere."""
    obj = build("all_tokens_mlm").eval()
    lm = obj.model.model
    with torch.no_grad():
        lm.generator_predictions.dense.weight.zero_()
        lm.generator_predictions.dense.bias.zero_()
        lm.generator_predictions.LayerNorm.bias.zero_()  # predictions are 0, so logits = the LM head's bias
        lm.generator_lm_head.bias.zero_()
        lm.generator_lm_head.bias[7] = math.log(3)
        obj.copy_head.weight.zero_()
        obj.copy_head.bias.fill_(math.log(0.3 / 0.7))
    ids = torch.tensor([[CLS, 7, SEP]])
    batch = Batch(ids, torch.ones_like(ids), torch.zeros_like(ids))
    z = V + 2  # softmax normaliser: 49 logits of 0 and one of log 3
    p_cls = p_sep = 0.3 + 0.7 * 1 / z  # copied and the right identity
    cases = {"copy": 0.3 + 0.7 * 3 / z,  # G sampled the original: copying is right too
             "replace": 0.7 * 3 / z}  # G replaced it: only the softmax can name the original token
    for mode, p_tok in cases.items():
        obj.generator = FixedGenerator(mode)
        out = obj(batch, torch.Generator().manual_seed(0))
        assert int(out.stats["n_selected"]) == 1
        expected = -(math.log(p_cls) + math.log(p_tok) + math.log(p_sep)) / 3
        assert out.loss.item() == pytest.approx(expected, rel=1e-5)
        assert int(out.stats["n_replaced"]) == (mode == "replace")


# --- unigram generator -----------------------------------------------------------------------------------------

def test_unigram_generator_samples_by_frequency():
    counts = torch.zeros(V)
    counts[-2:] = torch.tensor([900.0, 100.0])
    obj = build_objective(tiny_model_config(), PretrainConfig(generator_size="unigram"), TINY_VOCAB, counts)
    assert isinstance(obj.generator, UnigramGenerator)
    ids = torch.randint(5, V, (2000, 20), generator=torch.Generator().manual_seed(0))
    sel = select(ids, torch.ones_like(ids), SPECIALS, 0.5, torch.Generator().manual_seed(1))
    samples = obj.generator(ids, torch.ones_like(ids), torch.zeros_like(ids), sel,
                            torch.Generator().manual_seed(2)).samples
    assert samples.shape == sel.positions.shape
    assert set(samples.unique().tolist()) == {V - 2, V - 1}
    assert (samples == V - 2).float().mean().item() == pytest.approx(0.9, abs=0.01)


# --- training algorithms ---------------------------------------------------------------------------------------

def test_two_stage_trains_g_then_copies_g_into_d_then_trains_d():
    obj = build("electra", algorithm="two_stage", generator_size=1.0, model=tiny_model_config(intermediate_size=128))
    algo = TwoStage(obj, 0.5)
    g_only, d_only, shared = param_split(obj)
    batch = random_batch(torch.Generator().manual_seed(7), 4, 16)
    g0, d0 = snapshot(g_only), snapshot(d_only)

    opt = make_optimizer(obj, 1e-3, 0.01, 1e-6)
    rng = torch.Generator().manual_seed(0)

    def step(i):
        algo.on_step(i, 4)
        out = algo.loss(batch, rng)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return out

    for i in range(2):  # stage 1: steps 0, 1 of 4
        out = step(i)
        assert algo.stage == 1 and out.disc_loss == 0
    assert changed(d0, d_only) == set()
    assert len(changed(g0, g_only)) > len(g_only) // 2

    algo.on_step(2, 4)  # the switch at round(0.5 * 4) = 2
    assert algo.stage == 2
    g_body, d_body = obj.generator.model.electra.state_dict(), obj.discriminator.electra.state_dict()
    assert g_body.keys() == d_body.keys()
    assert all(torch.equal(g_body[k], d_body[k]) for k in g_body)

    g1, d1 = snapshot(g_only), snapshot(d_only)
    for i in range(2, 4):
        out = step(i)
        assert out.disc_loss > 0
    assert changed(g1, g_only) == set()  # G is frozen in stage two
    assert len(changed(d1, d_only)) > len(d_only) // 2
    assert algo.state_dict() == {"stage": 2}


def test_two_stage_state_restores_stage_two():
    obj = build("electra", algorithm="two_stage", generator_size=1.0, model=tiny_model_config(intermediate_size=128))
    algo = TwoStage(obj, 0.5)
    algo.load_state_dict({"stage": 2})
    assert algo.stage == 2 and obj.train_generator is False


def test_adversarial_trains_generator_by_reinforce_with_a_learned_baseline():
    obj = build("electra", algorithm="adversarial")
    algo = Adversarial(obj)
    assert isinstance(obj.reinforce_baseline, nn.Linear)
    assert obj.reinforce_baseline.in_features == obj.generator.model.config.hidden_size
    g_only, d_only, _ = param_split(obj)
    baseline = dict(obj.reinforce_baseline.named_parameters())
    g0, d0, b0 = snapshot(g_only), snapshot(d_only), snapshot(baseline)
    batch = random_batch(torch.Generator().manual_seed(8), 4, 16, special_rate=0.0)
    opt = make_optimizer(obj, 1e-3, 0.01, 1e-6)  # after Adversarial(): the baseline is in the optimiser
    assert any(p is obj.reinforce_baseline.weight for g in opt.param_groups for p in g["params"])
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):
        out = algo.loss(batch, rng)
        assert torch.isfinite(out.loss) and out.disc_loss > 0
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    assert changed(g0, g_only)  # the generator learns from D's loss (REINFORCE), not from nothing
    assert changed(d0, d_only)
    assert changed(b0, baseline) == set(baseline)


def test_adversarial_generator_learns_only_through_the_reward(monkeypatch):
    """With D's loss (the reward) and the baseline pinned at 0 the advantage is 0, so G gets no gradient at all:
    it is trained by REINFORCE on D's loss, not by maximum likelihood (App. F)."""
    obj = build("electra", algorithm="adversarial")
    algo = Adversarial(obj)
    nn.init.zeros_(obj.reinforce_baseline.weight)
    nn.init.zeros_(obj.reinforce_baseline.bias)
    g_only, _, _ = param_split(obj)
    batch = random_batch(torch.Generator().manual_seed(9), 4, 16, special_rate=0.0)

    algo.loss(batch, torch.Generator().manual_seed(0)).loss.backward()  # control: a real reward moves G
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g_only.values())
    obj.zero_grad(set_to_none=True)

    disc_scores = obj.disc_scores

    def no_reward(batch, sel, corrupted, labels):
        logits, weights, bce = disc_scores(batch, sel, corrupted, labels)
        return logits, weights, bce * 0

    monkeypatch.setattr(obj, "disc_scores", no_reward)
    algo.loss(batch, torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in g_only.values())
