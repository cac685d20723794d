"""Fine-tuning heads on a pre-trained ELECTRA encoder.

Paper §3.1 / GR classification_tasks.py: dropout + one linear layer on the first token's final hidden state (no
pooler). HF's `ElectraClassificationHead` adds a dense+GELU layer; `head="hf"` selects it for comparison.
Tagging: dropout + linear on every token; the first word-piece of each word carries the word's label (GR tagging).

`to_hf` maps a fine-tuned EncoderWithHead onto the standard Hugging Face classes (`ElectraForSequenceClassification`,
`ElectraForTokenClassification`), so `save_pretrained` gives a folder that `AutoModelFor*Classification` and
`transformers.pipeline` load with no harness code. The encoder is already an HF `ElectraModel` (its keys carry over
as they are); only the sequence head needs a mapping, because HF's is two layers with a GELU between.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from transformers import (
    ElectraConfig,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    PreTrainedModel,
)
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


def to_hf(model: EncoderWithHead, labels: list[str] | None,
          state: dict[str, Tensor] | None = None) -> PreTrainedModel:
    """The same function as `model` (its weights, or `state`: a state dict of it) as an HF model, in eval mode.

    `labels`: class / tag names in id order (config id2label / label2id); None: regression (num_labels 1,
    problem_type "regression"). Sequence tasks: the `hf` head is HF's own (keys copied); the paper's `linear` head
    (W, b on [CLS]) goes into HF's dense -> GELU -> out_proj exactly, by GELU(x) - GELU(-x) = x: dense rows 0..C-1 are
    (W, b), rows C..2C-1 are (-W, -b), the rest zero (GELU(0) = 0), and out_proj takes row i minus row C+i. Exact
    at inference (fp32 rounding, ~1e-7 relative); training the exported model further trains HF's two-layer head
    from that point (dropout then acts on the 2C GELU units instead of the [CLS] vector)."""
    state = model.state_dict() if state is None else state
    enc_cfg = model.electra.config
    n_out = state["classifier.weight" if "classifier.weight" in state else "classifier.out_proj.weight"].shape[0]
    if labels is not None and len(labels) != n_out:
        raise ValueError(f"{len(labels)} label names for a head with {n_out} outputs")
    names = list(labels) if labels is not None else ["LABEL_0"]
    cls = ElectraForTokenClassification if model.per_token else ElectraForSequenceClassification
    problem = None if model.per_token else ("regression" if labels is None else "single_label_classification")
    cfg = ElectraConfig(**{**enc_cfg.to_dict(), "id2label": dict(enumerate(names)),
                           "label2id": {n: i for i, n in enumerate(names)}, "problem_type": problem,
                           "architectures": [cls.__name__]})
    out = cls(cfg)
    weights = {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}
    if not model.per_token and model.head == "linear":
        weights |= linear_as_hf_head(weights.pop("classifier.weight"), weights.pop("classifier.bias"),
                                     enc_cfg.hidden_size)
    out.load_state_dict(weights, strict=True)  # every key of the HF model from the harness model, none left over
    return out.eval()


def linear_as_hf_head(weight: Tensor, bias: Tensor, hidden: int) -> dict[str, Tensor]:
    """HF ElectraClassificationHead weights computing the linear map (weight [C, H], bias [C]) exactly (`to_hf`)."""
    c = weight.shape[0]
    if 2 * c > hidden:
        raise ValueError(f"a linear head of {c} outputs needs hidden size >= {2 * c} to map onto HF's head")
    dense_w, dense_b = torch.zeros(hidden, hidden), torch.zeros(hidden)
    dense_w[:c], dense_b[:c] = weight, bias  # GELU(Wx + b)
    dense_w[c:2 * c], dense_b[c:2 * c] = -weight, -bias  # GELU(-(Wx + b))
    out_w = torch.zeros(c, hidden)
    out_w[:, :c], out_w[:, c:2 * c] = torch.eye(c), -torch.eye(c)  # the difference: Wx + b
    return {"classifier.dense.weight": dense_w, "classifier.dense.bias": dense_b,
            "classifier.out_proj.weight": out_w, "classifier.out_proj.bias": torch.zeros(c)}


def n_layers(model: nn.Module) -> int:
    return model.electra.config.num_hidden_layers


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

