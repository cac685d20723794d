"""The config schema: every knob of the harness, its default, and where the default comes from.

Defaults live here and nowhere else (DESIGN.md principle 2). Each field is addressed by its dotted path
(`pretrain.disc_weight`), the one name used by `--set`, suite axes, Optuna spaces, MLflow params and tables.
Paper tables cited as "T6" (pre-training hyperparameters) and "T7" (fine-tuning hyperparameters).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .paths import check_name
from .perturb import PERTURBATIONS  # the registry is the one list of perturbation kinds
from .registry import UnknownName


class Strict(BaseModel):
    """The base of every config section (issue #17): unknown keys refused, values never coerced (`true` is not 1,
    `"3"` is not 3; an int is still a valid float), inf/nan refused. New fields get all three for free; give a
    number an upper bound too (the `MAX_*` below) so a value that validates also means something."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# Sanity bounds: far beyond any real run, low enough that arithmetic on them cannot overflow or allocate absurdly.
MAX_STEPS = 100_000_000  # 100x ELECTRA-Large's 1.75M steps (T6)
MAX_FLOPS = 1e24  # ~300x ELECTRA-Large's 3.1e21 training FLOPs (T8)
MAX_WIDTH = 65_536  # hidden/intermediate/embedding sizes, batch sizes
MAX_SEQ = 8192  # sequence lengths and position tables


def _distinct(seeds: list[int] | None) -> list[int] | None:
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ValueError("pretrain_seeds must be a non-empty list without repeats")
    return seeds


class ModelConfig(Strict):
    """Discriminator (and MLM baseline) encoder. The generator is derived from it (sizes.generator_dims)."""

    size: Literal["tiny", "mini", "small", "base", "large"] = "small"  # T6 presets (+ CPU-scale tiny/mini)
    hidden_size: int | None = Field(None, gt=0, le=MAX_WIDTH)  # overrides the preset; T6 Small: 256
    num_layers: int | None = Field(None, gt=0, le=1024)  # T6 Small: 12
    num_heads: int | None = Field(None, gt=0, le=1024)  # T6 Small: 4
    intermediate_size: int | None = Field(None, gt=0, le=MAX_WIDTH)  # T6 Small: 1024
    embedding_size: int | None = Field(None, gt=0, le=MAX_WIDTH)  # factorised, T6 Small: 128 (projected to hidden)
    dropout: float = Field(0.1, ge=0, lt=1)  # T6: 0.1
    attention_dropout: float = Field(0.1, ge=0, lt=1)  # T6: 0.1
    max_position_embeddings: int = Field(512, gt=0, le=MAX_SEQ)  # BERT/ELECTRA default
    attention: Literal["eager", "sdpa"] = "eager"  # eager was faster with bf16 on CPU (stack-notes)


class TokenizerConfig(Strict):
    vocab: str = "vocab/bert-base-uncased-vocab.txt"  # ELECTRA's uncased vocab; relative to the data root
    train_vocab_size: int | None = Field(None, ge=256)  # train a WordPiece vocab of this size on the corpus
    train_max_bytes: int = Field(50_000_000, gt=0)  # corpus text read to train that vocab
    lowercase: bool = True  # ELECTRA models are uncased (electra-reference §12.2)


class CorpusConfig(Strict):
    # Modern prose, the closest to ELECTRA's Wikipedia+books/OWT domain (data README §3c-3e).
    sources: list[str] = ["corpus/wikipedia-en-2015/*.txt.gz", "corpus/bbc-news/*.txt.gz",
                          "corpus/reuters-21578/*.txt.gz"]
    weights: list[float] | None = None  # mixture weights per source (documents resampled); None = as read
    max_bytes: int | None = Field(None, gt=0)  # read at most this much text per source (None: all)
    max_seq_length: int = Field(128, ge=8, le=MAX_SEQ)  # T6 Small: 128
    heldout_blocks: int = Field(256, ge=0)  # blocks kept out of training for pre-training eval
    single_segment_prob: float = Field(0.1, ge=0, le=1)  # GR build_pretraining_dataset: 10% one segment
    short_seq_prob: float = Field(0.05, ge=0, le=1)  # GR: 5% random target length in [5, max]

    @model_validator(mode="after")
    def _weights_match(self):
        if self.weights is not None and len(self.weights) != len(self.sources):
            raise ValueError(f"weights has {len(self.weights)} entries but sources has {len(self.sources)}")
        return self


class PretrainConfig(Strict):
    objective: Literal["electra", "electra_15", "replace_mlm", "all_tokens_mlm", "mlm"] = "electra"  # T5
    algorithm: Literal["joint", "two_stage", "adversarial"] = "joint"  # §3.2, Fig. 3 right, App. F
    generator_size: float | Literal["unigram"] = 0.25  # fraction of D width; T6 Small 1/4; Fig. 3 "unigram"
    disc_weight: float = Field(50.0, gt=0)  # lambda, App. A: 50 ("disc loss is much lower than gen loss")
    gen_weight: float = Field(1.0, gt=0)  # GR configure_pretraining gen_weight
    mask_prob: float = Field(0.15, gt=0, lt=1)  # T6: 15% Small/Base, 25% Large
    # "auto" = the paper's choice per objective: ELECTRA style (85% [MASK] / 15% kept, GR code) for the generator
    # objectives, BERT style (80% [MASK] / 10% random / 10% kept) for `mlm` (Table 5 "BERT", §3.5).
    mask_style: Literal["auto", "electra", "bert"] = "auto"
    temperature: float = Field(1.0, gt=0)  # generator sampling temperature (GR `temperature`)
    # annealed sampling: linear from `temperature` at the first step to this at the last (None: constant). Not in
    # the paper: an issue-14 lever (T=2 fakes are easy enough to leave the plateau, T=1 ones are the paper's)
    temperature_end: float | None = Field(None, gt=0)
    tying: Literal["none", "embeddings", "all"] = "embeddings"  # §3.2: tied embeddings (83.6/84.3/84.4)
    two_stage_switch: float = Field(0.5, gt=0, lt=1)  # two_stage: fraction of steps training G alone
    lr: float = Field(5e-4, gt=0)  # T6 Small 5e-4
    warmup_fraction: float = Field(0.01, ge=0, lt=1)  # T6: 10k warmup of 1M steps
    weight_decay: float = Field(0.01, ge=0)  # T6
    adam_eps: float = Field(1e-6, gt=0)  # T6
    adam_beta1: float = Field(0.9, ge=0, lt=1)  # T6
    adam_beta2: float = Field(0.999, ge=0, lt=1)  # T6
    adam_bias_correction: bool = True  # False = the official code's AdamWeightDecay (no bias correction)
    grad_clip: float = Field(1.0, gt=0)  # GR optimization.py global-norm clip
    batch_size: int = Field(128, gt=0, le=MAX_WIDTH)  # T6 Small: 128
    steps: int = Field(1_000_000, gt=0, le=MAX_STEPS)  # T6 Small: 1M; ignored when `budget_flops` is set
    budget_flops: float | None = Field(None, gt=0, le=MAX_FLOPS)  # equal compute: steps = budget / FLOPs per step
    # How `budget_flops` counts: "official" = GR flops_computation.py (embedding lookups as dense one-hot matmuls,
    # the paper's Table 1 FLOPs); "compute" = lookups as gathers (what the hardware does: with a small model and
    # an 8k vocab the dense lookup dominates and gives BERT ~54% more steps than ELECTRA, issue 14 audit)
    flops_convention: Literal["official", "compute"] = "official"
    eval_every: int = Field(500, gt=0, le=MAX_STEPS)  # steps between held-out RTD evaluations
    eval_batches: int = Field(4, gt=0, le=100_000)
    # Steps between training-metric logs, which are the loop's only host syncs (and non-finite checks); None:
    # steps / 20, at most 50. Logging only: not part of the run key.
    log_every: int | None = Field(None, gt=0, le=MAX_STEPS)
    checkpoints: list[float] = [0.0625, 0.125, 0.25, 0.5, 1.0]  # T1 rows: 6.25% ... 100% trained
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast (CPU: ~1.6x, stack-notes; CUDA: Hopper)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # GPU options (issue 15); each default is what the loop did before the option existed. Speed-only ones
    # (fused_adam, compile, sdpa_backend: the same arithmetic, other kernels) are not part of the run key; the
    # numerics-changing ones (tf32, grad_accumulation) are, and are left out of it at their defaults (suite.py).
    fused_adam: bool = False  # torch's fused AdamW: one kernel for all tensors; needs adam_bias_correction
    # torch.compile of the objective's forward ("off" | a torch.compile mode); the best mode is measured by
    # benchmarks/pretrain_step.py --device cuda
    compile: Literal["off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "off"
    tf32: bool = True  # CUDA: TF32 matmuls for the fp32 parts (10-bit mantissa, Ampere and later); CPU: no effect
    # micro-batches per optimiser step (batch_size / grad_accumulation each): batches of 128-1024 in less memory
    grad_accumulation: int = Field(1, ge=1, le=64)
    # CUDA, model.attention "sdpa": the one SDPA kernel allowed ("auto": torch's choice; "flash" needs no padding
    # in the batch, which the pre-training loop knows on the host and then passes no mask)
    sdpa_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = "auto"

    @field_validator("checkpoints")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in v):
            raise ValueError("checkpoint fractions must be in (0, 1]")
        return sorted(set(v))

    @field_validator("generator_size")
    @classmethod
    def _gen_size(cls, v):
        if v != "unigram" and not 0 < v <= 1:
            raise ValueError("generator_size must be in (0, 1] or 'unigram'")
        return v

    @model_validator(mode="after")
    def _combinations(self):
        if self.tying == "all" and self.generator_size != 1:
            raise ValueError("tying 'all' makes G and D one network: it needs generator_size 1 (§3.2)")
        if self.algorithm == "two_stage" and self.generator_size != 1:
            raise ValueError("two_stage initialises D from G: it needs generator_size 1 (§3.2)")
        if self.generator_size == "unigram" and self.algorithm != "joint":
            raise ValueError("a unigram generator has nothing to train: algorithm must be 'joint'")
        if self.temperature_end is not None and (self.objective == "mlm" or self.generator_size == "unigram"):
            raise ValueError("temperature_end anneals a masked-LM generator's sampling: objective 'mlm' and a "
                             "unigram generator have none")
        if self.objective == "mlm" and self.algorithm != "joint":
            raise ValueError("objective 'mlm' has no generator: algorithm must be 'joint'")
        if self.fused_adam and not self.adam_bias_correction:
            raise ValueError("fused_adam is torch's AdamW, which always corrects bias: the official no-bias-correction "
                             "variant (adam_bias_correction false) runs unfused")
        if self.batch_size % self.grad_accumulation:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of grad_accumulation "
                             f"{self.grad_accumulation}")
        return self


class FinetuneConfig(Strict):
    init: str = "pretrained"  # "pretrained" (this cell's D), "random", a save_pretrained dir, or a hub id
    checkpoint: float = Field(1.0, gt=0, le=1)  # which pre-training checkpoint (fraction) to fine-tune
    lr: float = Field(3e-4, gt=0)  # T7 Small 3e-4 (GR code default: 1e-4)
    layerwise_lr_decay: float = Field(0.8, gt=0, le=1)  # T7 Small/Base 0.8
    official_layer_decay: bool = False  # True: GR's off-by-one (top layer gets lr*decay^2, GR #51)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)  # T7
    weight_decay: float = Field(0.0, ge=0)  # T7: 0 (GR code: 0.01)
    adam_eps: float = Field(1e-6, gt=0)  # T7
    batch_size: int = Field(32, gt=0, le=MAX_WIDTH)  # T7
    epochs: float | None = Field(None, gt=0, le=10_000)  # None: the task's default (T7: 3; RTE/STS-B 10)
    max_seq_length: int = Field(128, ge=8, le=MAX_SEQ)
    train_examples: int | None = Field(None, gt=0)  # low-resource: a seeded subsample of the train split
    dev_examples: int | None = Field(None, gt=0)  # cap the dev split (seeded subsample; None: all)
    head: Literal["linear", "hf"] = "linear"  # §3.1: linear on [CLS]; "hf": ElectraClassificationHead
    double_unordered: bool = True  # GR: MRPC/STS-B also train on (B, A) pairs
    eval_test: bool = False  # also predict the test split (written in submission format)
    precision: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Fine-tuning dropout, its own setting (not model.dropout, the pre-training one): GR's fine-tuning keeps the
    # BERT config's 0.1 (hidden and attention) whatever pre-training used
    dropout: float = Field(0.1, ge=0, lt=1)  # GR bert_config hidden_dropout_prob 0.1 (T6)
    attention_dropout: float = Field(0.1, ge=0, lt=1)  # GR bert_config attention_probs_dropout_prob 0.1
    # Save each fine-tuned model in Hugging Face format (AutoModelFor{Sequence,Token}Classification + tokenizer) under
    # work/<suite>/models/<run_key>/: "last" = the weights the record scores, "best" = the best per-epoch dev
    # headline's (kept in memory). Output only (the metrics are the same): not part of the run key.
    save_model: Literal["none", "best", "last"] = "none"


class RunConfig(Strict):
    """Everything that determines one pre-training cell and its fine-tunes."""

    model: ModelConfig = ModelConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    corpus: CorpusConfig = CorpusConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()

    @model_validator(mode="after")
    def _fits_together(self):
        """Cross-field rules: values each valid alone that cannot mean what was asked together (issue #17)."""
        positions = self.model.max_position_embeddings
        for name, length in (("corpus", self.corpus.max_seq_length), ("finetune", self.finetune.max_seq_length)):
            if length > positions:
                raise ValueError(f"{name}.max_seq_length {length} exceeds model.max_position_embeddings {positions}"
                                 " (the position table has no row for the later tokens)")
        if self.finetune.init == "pretrained" and self.finetune.checkpoint not in self.pretrain.checkpoints:
            raise ValueError(f"finetune.checkpoint {self.finetune.checkpoint:g} is never saved: pretrain.checkpoints"
                             f" is {[f'{f:g}' for f in self.pretrain.checkpoints]}")
        return self

    @property
    def needs_pretraining(self) -> bool:
        """Whether the cell pre-trains its own encoder (fine-tunes from its discriminator, not random or external)."""
        return self.finetune.init == "pretrained"

    @property
    def has_generator(self) -> bool:
        """Whether the cell's pre-training trains a masked-LM generator that could propose substitutions (the
        `generator` perturbation of a `robustness:` section samples from one)."""
        return self.needs_pretraining and self.pretrain.objective != "mlm" and self.pretrain.generator_size != "unigram"


class CellSpec(Strict):
    label: str | None = None  # row name in tables ("ELECTRA", "random init")
    set: dict[str, Any] = {}  # dotted path -> value, applied on top of `base`
    # This row's pretraining seeds, overriding the suite's `pretrain_seeds` (e.g. Table 1's partly trained
    # checkpoints of one pre-training beside fully seeded ELECTRA / BERT rows). None: the suite's.
    pretrain_seeds: list[int] | None = None
    crossed: bool = True  # False: one row, not crossed with the suite's axes (a control, e.g. random init)

    @field_validator("pretrain_seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        return _distinct(v)


class TrackingConfig(Strict):
    uri: str | None = None  # None: sqlite:///<work_dir>/mlflow.db (embedded); or an MLflow server URL
    enabled: bool = True


class PlotConfig(Strict):
    """One plot of a suite's table: a task's headline (or the GLUE score) against an axis (Fig. 3 style)."""

    axis: str  # an axis path of the suite (pretrain.generator_size), or "train_flops" / "params" (equal compute)
    metric: str  # a task of the suite, or "glue"
    file: str | None = None  # None: "<metric>_vs_<axis>.png"
    logx: bool | None = None  # None: logarithmic x for train_flops / params (Fig. 1 plots FLOPs on a log scale)


class TableConfig(Strict):
    """How the suite's records become table.md / .tex / .csv and plots (claims.table_spec; tables.py renders)."""

    title: str | None = None  # heading of table.md; None: "<suite name>: <description>"
    columns: list[str] | None = None  # tasks shown (default: all suite tasks)
    # extra columns: train_flops, params, or a held-out pretraining metric: disc_recall, disc_auc, lookup_auc
    # (context-free baseline), token_cosine (collapse signal), gen_mlm_acc, ...
    extra: list[str] = []
    spread: Literal["sd", "ci"] = "sd"  # after the median: sample sd over seeds, or a bootstrap 95% CI (§3.1 medians)
    digits: int = Field(1, ge=0, le=6)  # decimals of metric values (the paper's tables: 1)
    reference: dict[str, dict[str, float]] = {}  # paper numbers: row label -> {column: value}
    reference_name: str = "paper"  # the word in the "<column> (paper)" headers of those numbers
    claims: list[dict[str, Any]] = []  # judged by verdicts.py (four verdicts, MDE); keys in claims.py
    plots: list[PlotConfig] = []


class SearchParam(Strict):
    """One dimension of an Optuna search space, over any dotted run-config path."""

    type: Literal["float", "logfloat", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None  # int/float grid step (optional)
    choices: list[Any] | None = None  # categorical

    @model_validator(mode="after")
    def _bounds(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter needs low < high")
        elif self.type == "logfloat" and self.low <= 0:
            raise ValueError("a logfloat parameter needs low > 0")
        return self


class SearchConfig(Strict):
    space: dict[str, SearchParam]  # dotted run path (e.g. finetune.lr) -> distribution
    objective: str  # a task of the suite (its headline metric, direction from the metric registry) or "glue"
    n_trials: int = Field(20, gt=0)
    timeout_s: float | None = Field(None, gt=0)
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"  # fed by dev metrics after each epoch
    storage: str | None = None  # None: a journal file under the work dir; or an RDB URL (PostgreSQL)
    study_name: str | None = None  # None: the suite's name
    sampler_seed: int = 0

    @field_validator("space")
    @classmethod
    def _paths(cls, v: dict) -> dict:
        sections = tuple(RunConfig.model_fields)
        for path in v:
            if path.split(".")[0] not in sections:
                raise ValueError(f"search path '{path}' must start with one of {', '.join(sections)}")
        if not v:
            raise ValueError("the search space is empty")
        return v


class RobustnessConfig(Strict):
    """Robustness evaluation (issue #9): after fine-tuning, each task's dev set is scored again under seeded
    perturbations (electra_bench/perturb.py), to test whether replaced-token detection makes a model robust to
    corrupted input. Dev sets only; the same perturbed sets for every cell and fine-tuning seed."""

    # Registered names in perturb.PERTURBATIONS: random_token (random word-pieces), generator (samples of a
    # pre-trained ELECTRA generator), char_typo (a character edit in a word), entity_swap (tagging tasks only).
    kinds: list[str] = ["random_token", "generator", "char_typo", "entity_swap"]
    # Fraction of the perturbable units (word-pieces, words, entity mentions) changed; rate 0 is the clean set.
    rates: list[float] = [0.05, 0.1, 0.2]
    seed: int = 0  # the perturbed sets depend on it (and on kind), never on the fine-tuning seed
    # Label of the cell whose pre-trained generator proposes the `generator` substitutions (one generator for
    # every cell, so all cells are scored on the same perturbed set). None: the first cell pre-training ELECTRA.
    generator_cell: str | None = None

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: list[str]) -> list[str]:
        for kind in v:
            if kind not in PERTURBATIONS:
                raise ValueError(str(UnknownName("perturbation kind", kind, PERTURBATIONS.names())))
        if not v or len(set(v)) != len(v):
            raise ValueError("kinds must be a non-empty list without repeats")
        return v

    @field_validator("rates")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < r <= 1 for r in v) or len(set(v)) != len(v):
            raise ValueError("rates must be a non-empty list of distinct fractions in (0, 1]")
        return sorted(v)


class SuiteConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$", max_length=100)
    description: str = ""
    data_root: str | None = None  # None: $ELECTRA_BENCH_DATA, ./data, then ../shared/data
    work_dir: str = "work"  # checkpoints, caches, MLflow store (not committed)
    results_dir: str = "results"  # records and tables (committed)
    base: RunConfig = RunConfig()
    cells: list[CellSpec] = [CellSpec()]
    axes: dict[str, list[Any]] = {}  # dotted path -> values; crossed with cells (cartesian)
    zip_axes: bool = False  # True: zip the axes (equal lengths) instead of the cartesian product
    tasks: list[str] = []
    seeds: list[int] = [0, 1, 2]  # fine-tuning seeds per task (paper: median of 10, §3.1)
    # Pretraining seeds of every pre-trained cell, crossed with `seeds`: a claim about a pretraining method is a
    # claim over pretraining runs (MultiBERTs, Sellam et al. ICLR 2022; the paper's own 14 re-pretrainings spread
    # 0.57 GLUE, electra-reference). Each sets `pretrain.seed`. None: each cell's one `pretrain.seed` (keys as before).
    pretrain_seeds: list[int] | None = None
    custom_tasks: list[dict[str, Any]] = []  # new GLUE-TSV / CoNLL tasks by configuration (tasks/base.py)
    table: TableConfig = TableConfig()
    tracking: TrackingConfig = TrackingConfig()
    search: SearchConfig | None = None  # Optuna study over any dotted path: `electra-bench search SUITE`
    robustness: RobustnessConfig | None = None  # perturbed dev sets; None: none (and fine-tune keys as before)

    @field_validator("name")
    @classmethod
    def _no_traversal(cls, v: str) -> str:
        return check_name(v, nested=True)  # paths.py: the one check for names used in paths

    @field_validator("pretrain_seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        return _distinct(v)

    @field_validator("seeds")
    @classmethod
    def _distinct_ft_seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):  # a repeated seed would make two records with one run key
            raise ValueError("seeds must be a non-empty list without repeats")
        return v

    @field_validator("axes")
    @classmethod
    def _axes_nonempty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            if not values:
                raise ValueError(f"axis '{path}' has no values")
        return v
