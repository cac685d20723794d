"""Shared test helpers: a tiny discriminator config and tiny-vocabulary ids, small enough for CPU-only tests.

Kept light on imports (no torch/transformers at import time) so tests that need neither stay fast."""
import sys

import pytest

from electra_bench.schema import ModelConfig

# [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4 (the BERT/ELECTRA special tokens); ordinary tokens 5..49.
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_IDS = (PAD, UNK, CLS, SEP, MASK)
VOCAB_SIZE = 50


def tiny_model_config(**overrides) -> ModelConfig:
    """A 2-layer, 32-wide discriminator (its 1/4 generator: 8 wide, 1 head); dropout off for determinism."""
    fields = dict(size="tiny", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, embedding_size=16,
                  dropout=0.0, attention_dropout=0.0, max_position_embeddings=64)
    return ModelConfig(**{**fields, **overrides})


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The test machine's 2 cores are shared with training runs: with 2 contended intra-op threads a tiny
    model's step is tens of times slower than with one. Only where torch is already imported (by a test module)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
