"""Config -> objects. The one module that reads the config schema to build models (DESIGN.md principle 3);
everything it builds takes plain typed arguments."""
from __future__ import annotations

import torch
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from .model.generators import MaskedLMGenerator, UnigramGenerator
from .model.objectives import AllTokensMLMObjective, ElectraObjective, MLMObjective, Vocab
from .schema import ModelConfig, PretrainConfig
from .sizes import Dims, generator_dims, resolve_dims


def disc_dims(model: ModelConfig) -> Dims:
    return resolve_dims(model.size, hidden=model.hidden_size, layers=model.num_layers, heads=model.num_heads,
                        intermediate=model.intermediate_size, embedding=model.embedding_size)


def electra_config(dims: Dims, vocab_size: int, model: ModelConfig) -> ElectraConfig:
    return ElectraConfig(vocab_size=vocab_size, embedding_size=dims.embedding, hidden_size=dims.hidden,
                         num_hidden_layers=dims.layers, num_attention_heads=dims.heads,
                         intermediate_size=dims.intermediate, hidden_dropout_prob=model.dropout,
                         attention_probs_dropout_prob=model.attention_dropout,
                         max_position_embeddings=model.max_position_embeddings, attn_implementation=model.attention)


def mask_style(pre: PretrainConfig) -> str:
    if pre.mask_style != "auto":
        return pre.mask_style
    return "bert" if pre.objective == "mlm" else "electra"


def tie(generator: ElectraForMaskedLM, discriminator: torch.nn.Module, tying: str) -> None:
    """Weight sharing between G and D (Paper §3.2).

    embeddings: token, position and segment embeddings and the embedding LayerNorm are one module (as RW does),
      and G's output projection stays tied to those token embeddings (G's input and output embeddings are
      always tied, as in BERT). Each network keeps its own embedding->hidden projection.
    all: G's encoder *is* D's encoder (needs equal sizes); only the heads differ.
    """
    if tying == "none":
        return
    d_body = discriminator.electra
    if tying == "all":
        generator.electra = d_body
    else:
        generator.electra.embeddings = d_body.embeddings
    generator.generator_lm_head.weight = d_body.embeddings.word_embeddings.weight


def build_objective(model: ModelConfig, pre: PretrainConfig, vocab: Vocab,
                    unigram_counts: torch.Tensor | None = None) -> torch.nn.Module:
    """The pre-training objective with its networks, from the `model` and `pretrain` config sections."""
    dims = disc_dims(model)
    style = mask_style(pre)
    d_cfg = electra_config(dims, vocab.size, model)
    if pre.objective == "mlm":
        return MLMObjective(MaskedLMGenerator(ElectraForMaskedLM(d_cfg)), vocab, pre.mask_prob, style)
    if pre.generator_size == "unigram":
        if unigram_counts is None:
            raise ValueError("a unigram generator needs the corpus token counts")
        generator = UnigramGenerator(unigram_counts)
        g_model = None
    else:
        g_dims = generator_dims(dims, float(pre.generator_size))
        g_model = ElectraForMaskedLM(electra_config(g_dims, vocab.size, model))
        generator = MaskedLMGenerator(g_model, pre.temperature)
    if pre.objective in ("electra", "electra_15"):
        disc = ElectraForPreTraining(d_cfg)
        if g_model is not None:
            tie(g_model, disc, pre.tying)
        return ElectraObjective(generator, disc, vocab, pre.mask_prob, style, pre.disc_weight, pre.gen_weight,
                                all_tokens=pre.objective == "electra")
    main = ElectraForMaskedLM(d_cfg)
    if g_model is not None:
        tie(g_model, main, pre.tying)
    if pre.objective == "replace_mlm":
        return MLMObjective(MaskedLMGenerator(main), vocab, pre.mask_prob, style, generator, pre.gen_weight)
    return AllTokensMLMObjective(MaskedLMGenerator(main), generator, vocab, pre.mask_prob, style, pre.gen_weight)
