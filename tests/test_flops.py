"""FLOPs counter against the official counter's totals (electra-reference.md §11, Paper Table 1) and by hand."""
from __future__ import annotations

import pytest

from electra_bench.flops import (
    OBJECTIVES,
    OFFICIAL_OUTPUT_FRAC,
    EncoderDims,
    binary_head_flops_per_token,
    block_flops_per_token,
    encoder_flops_per_token,
    inference_flops,
    input_embedding_flops_per_token,
    mlm_head_flops_per_prediction,
    steps_for_budget,
    train_flops_per_step,
)
from electra_bench.sizes import PRESETS, generator_dims

SMALL = EncoderDims.from_dims(PRESETS["small"])
BASE = EncoderDims.from_dims(PRESETS["base"])


def gen_of(size: str, hidden: int) -> EncoderDims:
    disc = PRESETS[size]
    return EncoderDims.from_dims(generator_dims(disc, hidden / disc.hidden))


def test_dims_and_generator_shapes():
    assert SMALL == EncoderDims(hidden=256, layers=12, heads=4, intermediate=1024, embedding=128, vocab=30522)
    # Paper Table 6 / GR get_generator_config: 1/4 width, same depth, shared 128-d embeddings.
    assert gen_of("small", 64) == EncoderDims(64, 12, 1, 256, 128, 30522)
    assert gen_of("base", 256) == EncoderDims(256, 12, 4, 1024, 768, 30522)


# (name, disc, gen hidden or None, objective, seq, batch, steps, official total)
HEADLINES = [
    ("electra_small", SMALL, 64, "electra", 128, 128, 1e6, 1.29e18),
    ("bert_small", SMALL, None, "mlm", 128, 128, 1.45e6, 1.42e18),
    ("electra_base", BASE, 256, "electra", 512, 256, 766e3, 6.42e19),
    ("bert_base", BASE, None, "mlm", 512, 256, 1e6, 6.43e19),
]


@pytest.mark.parametrize("name,disc,g,objective,seq,batch,steps,official", HEADLINES, ids=[h[0] for h in HEADLINES])
def test_headline_totals(name, disc, g, objective, seq, batch, steps, official):
    gen = None if g is None else gen_of("small" if disc is SMALL else "base", g)
    total = steps * train_flops_per_step(disc, gen, objective, seq, batch)
    assert total == pytest.approx(official, rel=0.05)  # default mask_prob 0.15
    exact = steps * train_flops_per_step(disc, gen, objective, seq, batch, mask_prob=OFFICIAL_OUTPUT_FRAC)
    assert exact == pytest.approx(official, rel=0.005)  # GR's 20/128 output fraction: as printed, to rounding


def test_equal_compute_base_steps():
    # GR gives 766,452; we differ by 3 steps because we count the post-attention LayerNorm as 5*H, not 5.
    bert = 1e6 * train_flops_per_step(BASE, None, "mlm", 512, 256, OFFICIAL_OUTPUT_FRAC)
    electra = train_flops_per_step(BASE, gen_of("base", 256), "electra", 512, 256, OFFICIAL_OUTPUT_FRAC)
    assert steps_for_budget(bert, electra) == pytest.approx(766_452, abs=10)


def test_inference_flops_match_table_1():
    assert inference_flops(SMALL, 128) == pytest.approx(3.68e9, rel=0.005)  # Table 1: 3.7e9
    assert inference_flops(BASE, 128) == pytest.approx(2.86e10, rel=0.005)  # Table 1: 2.9e10


@pytest.mark.parametrize("g,official", [(32, 1.28), (64, 1.32), (128, 1.46), (256, 1.96)])
def test_generator_size_step_cost_ratio(g, official):
    electra = train_flops_per_step(SMALL, gen_of("small", g), "electra", 128, 128)
    bert = train_flops_per_step(SMALL, None, "mlm", 128, 128)
    assert electra / bert == pytest.approx(official, rel=0.03)


def test_hand_computed_toy_encoder():
    d = EncoderDims(hidden=2, layers=1, heads=1, intermediate=4, embedding=2, vocab=3)
    # attention: QKV 24+6, scores 8, softmax/dropout/scale 10*2, values 8, out 8+2, dropout/residual/LN 20
    # ffn: up 16+4, GELU 32, down 16+2, dropout/residual/LN 20
    assert block_flops_per_token(d, seq_len=2) == 30 + 8 + 20 + 8 + 10 + 20 + 20 + 32 + 18 + 20
    # token table 12, position+type tables 2*2*(2+2)=16, add 4, LN+dropout 18; e == h so no projection
    assert input_embedding_flops_per_token(d, seq_len=2) == 12 + 16 + 4 + 18
    # transform 8+2+16+10, logits 12, softmax 15, target pick 6
    assert mlm_head_flops_per_prediction(d) == 36 + 12 + 15 + 6
    assert binary_head_flops_per_token(d) == 8 + 2 + 16 + 4
    assert inference_flops(d, seq_len=2) == 2 * (186 + 50 + 30)
    # one step = forward + backward = 2 x forward (GR), over batch x seq tokens, head at half the positions
    assert train_flops_per_step(d, None, "mlm", 2, 3, mask_prob=0.5) == 2 * 3 * 2 * (186 + 50 + 0.5 * 69)


def test_factorised_embedding_adds_projection():
    square = EncoderDims(256, 12, 4, 1024, 256, 30522)
    small_e = EncoderDims(256, 12, 4, 1024, 128, 30522)
    # 128-d lookups halve the table matmul; the 128->256 projection costs 2*128*256 + 256
    diff = input_embedding_flops_per_token(square, 128) - input_embedding_flops_per_token(small_e, 128)
    assert diff == 2 * 128 * (30522 + 130 + 1 + 9 / 2) - (2 * 128 * 256 + 256)


def test_every_objective_is_positive_and_ordered():
    gen = gen_of("small", 64)
    cost = {o: train_flops_per_step(SMALL, gen, o, 128, 128) for o in OBJECTIVES}
    assert all(c > 0 for c in cost.values())
    assert cost["mlm"] < cost["electra_15"] < cost["electra"] < cost["replace_mlm"] < cost["all_tokens_mlm"]
    assert cost["electra_15"] == pytest.approx(cost["electra"], rel=0.01)  # only the tiny binary head differs
    # Replace MLM is BERT plus the generator; the unigram generator is free.
    generator = cost["replace_mlm"] - cost["mlm"]
    assert generator == pytest.approx(cost["electra"] - train_flops_per_step(SMALL, None, "electra", 128, 128))
    assert train_flops_per_step(SMALL, gen, "mlm", 128, 128) == cost["mlm"]  # gen is ignored for mlm
    for o in OBJECTIVES:
        assert 0 < train_flops_per_step(SMALL, None, o, 128, 128) <= cost[o]


def test_encoder_is_most_of_the_step():
    # Sanity: layers dominate; embeddings are a large minority for Small because lookups are dense.
    per_token = encoder_flops_per_token(SMALL, 128)
    assert 0.6 < SMALL.layers * block_flops_per_token(SMALL, 128) / per_token < 0.85


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="did you mean 'electra_15'"):
        train_flops_per_step(SMALL, None, "electra15", 128, 128)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        train_flops_per_step(SMALL, None, "mlm", 128, 128, mask_prob=0.0)
    with pytest.raises(ValueError):
        steps_for_budget(1e18, 0.0)
    assert steps_for_budget(10.0, 3.0) == 3


def test_two_stage_counts_g_alone_then_g_forward_and_d_trained():
    """Paper §3.2: stage one trains G alone, stage two trains D with G frozen (G only proposes: forward, no
    backward). Counting it as the joint step (G and D both trained every step) gave a budgeted two-stage run ~60%
    of the others' compute at tiny scale (issue 14: 1.0 h of wall time against ~2.2 h for the joint rows)."""
    gen = gen_of("small", 256)  # G = D, as two-stage needs
    joint = train_flops_per_step(SMALL, gen, "electra", 128, 128)
    g_only = train_flops_per_step(SMALL, gen, "electra", 128, 128, two_stage_switch=0.999999)
    d_only = train_flops_per_step(SMALL, gen, "electra", 128, 128, two_stage_switch=1e-6)
    half = train_flops_per_step(SMALL, gen, "electra", 128, 128, two_stage_switch=0.5)
    assert half == pytest.approx((g_only + d_only) / 2, rel=1e-5)
    g_fwd = g_only / 2  # stage one is G's forward + backward = 2 x G's forward
    assert d_only == pytest.approx(joint - g_fwd, rel=1e-5)  # stage two drops only G's backward
    assert 0.55 < half / joint < 0.7
    with pytest.raises(ValueError, match="two_stage_switch"):
        train_flops_per_step(SMALL, gen, "electra", 128, 128, two_stage_switch=1.0)
