"""Analytic pre-training / inference FLOPs, for equal-compute comparisons (Paper §3.5, Table 1 "Train/Infer FLOPs").

Owns the FLOPs count of ELECTRA-style encoders and of every pre-training objective in Table 5. The counting
re-implements the logic of the official counter, google-research/electra `flops_computation.py` (GR), in our own
code, so our totals can be set next to the paper's (electra-reference.md §11):

  - one "FLOP" is one mathematical operation; a matmul of (m x k)(k x n) is 2*m*k*n; an exp counts as 1;
  - backward = forward, so one training step = 2 x forward (GR: "2* for forward/backward pass"). This is NOT the
    common 6*N*D convention (backward = 2 x forward, train = 3 x forward), which would give 1.5 x our numbers;
    the paper's FLOPs (1.29e18 for ELECTRA-Small, ...) were computed with 2 x, so we keep it;
  - embedding lookups are dense (one-hot times the table: 2*E*V per token), as GR assumes for TPUs: the
    "official" convention. The "compute" convention counts them as gathers (0 FLOPs: a row copy), what a GPU or
    CPU does; it matters at tiny scale, where 2*E*V dominates a step (8k vocab, hidden 128: BERT/ELECTRA cost
    ratio ~1.6 official vs ~1.1 compute). The MLM output logits against the table are a real matmul in both;
  - the MLM output softmax is computed only at masked positions (GR `output_frac`), the discriminator's binary
    head at every position.

Everything below is forward FLOPs *per token* unless a name says otherwise. Run the checks with
`pytest -q tests/test_flops.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from electra_bench.registry import did_you_mean
from electra_bench.sizes import Dims

# Per-element costs of the cheap O(hidden) ops, as GR estimates them. They hardly matter next to the O(hidden^2)
# matmuls, so they are kept as GR has them rather than re-derived.
DROPOUT_FLOPS = 4  # random number, compare, multiply by the mask, multiply by 1/(1-p)
LAYER_NORM_FLOPS = 5  # sum for the mean, square+sum for the variance, add bias, multiply scale
GELU_FLOPS = 8  # the tanh approximation 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
SOFTMAX_FLOPS = 5  # subtract max, exp, sum, divide (per logit)
COPY_MIX_FLOPS = 4  # All-Tokens MLM: p = D*[copy] + (1-D)*p_mlm(target): one 1-D, two multiplies, one add

# GR counts every MLM softmax over 15.625% of positions: BERT's max_predictions_per_seq (20 of 128, 80 of 512).
# Pass mask_prob=OFFICIAL_OUTPUT_FRAC to reproduce GR's totals exactly; our default 0.15 (Paper App. A) gives
# totals about 0.3% lower for Small.
OFFICIAL_OUTPUT_FRAC = 0.15625
TOKEN_TYPES = 2  # segment A/B: the token-type table is also looked up densely (GR: `self.s + 2`)
BERT_VOCAB = 30522  # uncased WordPiece vocabulary used by BERT and ELECTRA

Objective = Literal["electra", "electra_15", "replace_mlm", "all_tokens_mlm", "mlm"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
Convention = Literal["official", "compute"]  # embedding lookups as dense matmuls (GR) or as gathers
CONVENTIONS: tuple[str, ...] = get_args(Convention)
CONVENTION_NAMES = {"official": "official (GR flops_computation.py: embedding lookups as dense matmuls)",
                    "compute": "compute-faithful (embedding lookups as gathers)"}


@dataclass(frozen=True)
class EncoderDims:
    """The shape of one Transformer encoder, as far as FLOPs are concerned (Paper Table 6 names)."""

    hidden: int  # H
    layers: int  # L
    heads: int  # A; only the O(seq^2) softmax/dropout/scale terms depend on it
    intermediate: int  # FFN inner size, 4H in every paper model
    embedding: int  # E; 128 for Small (factorised, projected to H), = H otherwise
    vocab: int = BERT_VOCAB  # V

    @classmethod
    def from_dims(cls, dims: Dims, vocab: int = BERT_VOCAB) -> EncoderDims:
        """From a `sizes.Dims` (presets, `generator_dims`), so the size rules live in one place."""
        return cls(dims.hidden, dims.layers, dims.heads, dims.intermediate, dims.embedding, vocab)


def block_flops_per_token(d: EncoderDims, seq_len: int) -> float:
    """One Transformer layer (GR `get_block_flops`). Attention scores cost O(seq_len) per token."""
    h, i, s, a = d.hidden, d.intermediate, seq_len, d.heads
    attention = (
        3 * 2 * h * h + 3 * h  # Q, K, V projections + biases
        + 2 * h * s  # QK^T, all heads together
        + (SOFTMAX_FLOPS + DROPOUT_FLOPS + 1) * s * a  # softmax, attention dropout, 1/sqrt(d) scale
        + 2 * h * s  # attention-weighted sum of V
        + 2 * h * h + h  # output projection + bias
        + (DROPOUT_FLOPS + 1 + LAYER_NORM_FLOPS) * h  # dropout, residual, LayerNorm
    )
    # GR writes the post-attention LayerNorm as a flat 5 (missing the *h); we count 5*h. The difference is
    # < 0.1% of any total.
    ffn = (
        2 * h * i + i + GELU_FLOPS * i  # up-projection, bias, GELU
        + 2 * i * h + h  # down-projection, bias
        + (DROPOUT_FLOPS + 1 + LAYER_NORM_FLOPS) * h  # dropout, residual, LayerNorm
    )
    return float(attention + ffn)


def input_embedding_flops_per_token(d: EncoderDims, seq_len: int, convention: Convention = "official") -> float:
    """Token, position and segment embeddings (GR `get_embedding_flops(output=False)`): dense lookups under the
    official convention, gathers (no arithmetic) under "compute"."""
    e = d.embedding
    lookups = 2 * e * d.vocab + 2 * e * (seq_len + TOKEN_TYPES)  # one-hot x token, position, token-type tables
    flops = (
        (lookups if convention == "official" else 0)
        + 2 * e  # add the three embeddings
        + (LAYER_NORM_FLOPS + DROPOUT_FLOPS) * e
    )
    if e != d.hidden:  # factorised embeddings (Small: 128 -> 256) need a projection to the hidden size
        flops += 2 * e * d.hidden + d.hidden
    return float(flops)


def encoder_flops_per_token(d: EncoderDims, seq_len: int, convention: Convention = "official") -> float:
    """Embeddings plus all layers, without any output head."""
    return input_embedding_flops_per_token(d, seq_len, convention) + d.layers * block_flops_per_token(d, seq_len)


def mlm_head_flops_per_prediction(d: EncoderDims) -> float:
    """MLM head at one predicted position (GR `get_embedding_flops(output=True)`; GR `get_token_logits`, §7.1):
    dense H->E + GELU + LayerNorm, logits against the tied embedding table, softmax, pick the target word."""
    e, v = d.embedding, d.vocab
    return float(
        2 * d.hidden * e + e + GELU_FLOPS * e + LAYER_NORM_FLOPS * e  # transform to the embedding size
        + 2 * e * v  # logits = transformed x embedding table^T
        + SOFTMAX_FLOPS * v + 2 * v  # softmax and target-word pick-out (GR `output_target_word`)
    )


def binary_head_flops_per_token(d: EncoderDims) -> float:
    """Discriminator head (GR `get_binary_classification_flops`): dense H->H + GELU, then H->1 logit."""
    h = d.hidden
    return float(2 * h * h + h + GELU_FLOPS * h + 2 * h)


def _mlm_model_forward(d: EncoderDims, seq_len: int, predicted_frac: float, convention: Convention) -> float:
    """Forward FLOPs per token of an encoder trained with an MLM head on `predicted_frac` of the positions."""
    return encoder_flops_per_token(d, seq_len, convention) + predicted_frac * mlm_head_flops_per_prediction(d)


def _forward_flops_per_token(
    disc: EncoderDims, gen: EncoderDims | None, objective: str, seq_len: int, mask_prob: float,
    convention: Convention,
) -> tuple[float, float]:
    """Forward FLOPs per input token for one objective of Paper Table 5: (generator, main model)."""
    if objective == "mlm":  # BERT: one encoder, MLM head at the masked positions; no generator
        return 0.0, _mlm_model_forward(disc, seq_len, mask_prob, convention)
    # Generator: an MLM over the masked positions. gen=None is the "unigram" generator (Paper Fig. 3 left):
    # sampling from fixed token frequencies costs nothing next to a network.
    generator = 0.0 if gen is None else _mlm_model_forward(gen, seq_len, mask_prob, convention)
    encoder = encoder_flops_per_token(disc, seq_len, convention)
    if objective == "electra":  # binary replaced-token head at every position
        main = encoder + binary_head_flops_per_token(disc)
    elif objective == "electra_15":  # same head, but the loss (so the head) only at the masked positions
        main = encoder + mask_prob * binary_head_flops_per_token(disc)
    elif objective == "replace_mlm":  # MLM on generator-corrupted input, loss at the masked positions
        main = _mlm_model_forward(disc, seq_len, mask_prob, convention)
    else:  # all_tokens_mlm: MLM softmax at every position plus a sigmoid copy gate and the mixture (Paper §3.5)
        main = _mlm_model_forward(disc, seq_len, 1.0, convention) + binary_head_flops_per_token(disc) + COPY_MIX_FLOPS
    return generator, main


# Backward = forward (GR), so a training step costs twice the forward pass.
TRAIN_FLOPS_MULTIPLIER = 2.0


def train_flops_per_step(
    disc: EncoderDims,
    gen: EncoderDims | None,
    objective: Objective,
    seq_len: int,
    batch_size: int,
    mask_prob: float = 0.15,
    convention: Convention = "official",
    two_stage_switch: float | None = None,
) -> float:
    """FLOPs of one pre-training step (forward + backward) over batch_size x seq_len tokens.

    `disc` is the model that is kept (the discriminator, or the BERT/MLM encoder). `gen` is the generator for
    the ELECTRA-family objectives (None = unigram generator, cost 0); it is ignored for "mlm". `mask_prob` is
    the fraction of positions that get an MLM softmax (and the ELECTRA-15% loss); see OFFICIAL_OUTPUT_FRAC.
    `convention`: how embedding lookups count (CONVENTION_NAMES).
    `two_stage_switch`: the two-stage algorithm's fraction of steps training G alone (Paper §3.2); the result is
    then the mean step over both stages: stage one trains G alone (G forward + backward), stage two trains D with
    G frozen (G forward only, D forward + backward). None: the joint step, G and D both trained every step.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective '{objective}'{did_you_mean(objective, OBJECTIVES)}; "
                         f"known: {', '.join(OBJECTIVES)}")
    if not 0 < mask_prob <= 1 or seq_len < 1 or batch_size < 1:
        raise ValueError(f"need 0 < mask_prob <= 1, seq_len >= 1, batch_size >= 1; got {mask_prob}, "
                         f"{seq_len}, {batch_size}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown FLOPs convention '{convention}'; known: {', '.join(CONVENTIONS)}")
    if two_stage_switch is not None and not 0 < two_stage_switch < 1:
        raise ValueError(f"need 0 < two_stage_switch < 1; got {two_stage_switch}")
    generator, main = _forward_flops_per_token(disc, gen, objective, seq_len, mask_prob, convention)
    if two_stage_switch is None:
        trained = TRAIN_FLOPS_MULTIPLIER * (generator + main)
    else:  # stage one: G trained; stage two: G only proposes (forward), D trained
        trained = (two_stage_switch * TRAIN_FLOPS_MULTIPLIER * generator
                   + (1 - two_stage_switch) * (generator + TRAIN_FLOPS_MULTIPLIER * main))
    return batch_size * seq_len * trained


def inference_flops(disc: EncoderDims, seq_len: int, convention: Convention = "official") -> float:
    """Forward FLOPs to classify one sequence (GR `get_infer_flops`): the encoder plus a binary head at every
    position, as GR counts it (a [CLS]-only head would be ~1% less for Small). Paper Table 1 "Infer FLOPs"."""
    return seq_len * (encoder_flops_per_token(disc, seq_len, convention) + binary_head_flops_per_token(disc))


def steps_for_budget(budget_flops: float, flops_per_step: float) -> int:
    """Whole steps that fit in a compute budget (e.g. ELECTRA-Base steps matching 1M BERT-Base steps)."""
    if budget_flops < 0 or flops_per_step <= 0:
        raise ValueError(f"need budget >= 0 and flops_per_step > 0; got {budget_flops}, {flops_per_step}")
    return math.floor(budget_flops / flops_per_step)
