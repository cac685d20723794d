"""Fine-tuning heads on a pre-trained ELECTRA encoder.

Paper §3.1 / GR classification_tasks.py: dropout + one linear layer on the first token's final hidden state (no
pooler). HF's `ElectraClassificationHead` adds a dense+GELU layer; `head="hf"` selects it for comparison.
Tagging: dropout + linear on every token; the first word-piece of each word carries the word's label (GR tagging).
"""
from __future__ import annotations

import copy

from torch import Tensor, nn
from transformers import ElectraConfig, ElectraModel
from transformers.models.electra.modeling_electra import ElectraClassificationHead


class EncoderWithHead(nn.Module):
    def __init__(self, encoder: ElectraModel, num_outputs: int, per_token: bool, head: str = "linear"):
        super().__init__()
        self.electra = encoder  # named like HF's models so layer-wise lr finds "electra.encoder.layer.N"
        cfg = encoder.config
        self.per_token = per_token
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        if head == "hf" and not per_token:
            hf_cfg = ElectraConfig(**{**cfg.to_dict(), "num_labels": num_outputs})
            self.classifier = ElectraClassificationHead(hf_cfg)
        else:
            self.classifier = nn.Linear(cfg.hidden_size, num_outputs)
            nn.init.normal_(self.classifier.weight, std=cfg.initializer_range)  # BERT/ELECTRA init
            nn.init.zeros_(self.classifier.bias)
        self.head = head

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        hidden = self.electra(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state  # [B, L, H]
        if self.per_token:
            return self.classifier(self.dropout(hidden))  # [B, L, C]
        if self.head == "hf":
            return self.classifier(hidden)  # the HF head takes [B, L, H] and uses token 0 itself
        return self.classifier(self.dropout(hidden[:, 0]))  # [B, C]


def load_encoder(source: str | None, config: ElectraConfig | None, dropout: float | None = None,
                 attention_dropout: float | None = None) -> ElectraModel:
    """The encoder from a save_pretrained dir / hub id, or randomly initialised from `config` (source None).
    `dropout` / `attention_dropout` (None: as saved / as `config`) override the hidden and attention dropout: the
    fine-tuning values, independent of the pre-training ones (GR fine-tunes with 0.1)."""
    overrides = {k: v for k, v in (("hidden_dropout_prob", dropout),
                                   ("attention_probs_dropout_prob", attention_dropout)) if v is not None}
    if source is None:
        if config is None:
            raise ValueError("a random encoder needs a config")
        config = copy.deepcopy(config)
        for name, value in overrides.items():
            setattr(config, name, value)
        return ElectraModel(config)
    return ElectraModel.from_pretrained(source, **overrides)


def n_layers(model: nn.Module) -> int:
    return model.electra.config.num_hidden_layers


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

