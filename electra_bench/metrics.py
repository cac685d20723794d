"""Evaluation metrics: one registry of named metrics with their semantics, plus GLUE / leaderboard averages.

Every metric is `fn(preds, labels) -> float` on raw values in [0, 1] (or [-1, 1] for correlations); `scale` says
how tables report it (x100, as the paper and the GLUE leaderboard do). `higher_is_better` is what Optuna
directions, "best" markers and early stopping read (STYLE.md #8). `kinds` and `n_labels` say which tasks it can
score (binary F1: classification with exactly 2 labels); a task that lists a metric it cannot be scored with is
refused when its spec is validated, so a suite's custom task fails at load time, not after training
(`Metric.misfit`, read by tasks/base.py). Implemented with scikit-learn, SciPy and seqeval directly, never
`evaluate.load`, which needs the hub (stack-notes.md "evaluate 0.4.6").

Conventions (electra-reference.md §12):
- ELECTRA's GLUE headline: MCC for CoLA, Spearman for STS-B, accuracy for the rest; the GLUE score is the mean
  of the per-task headlines (Paper §3.1) -> `glue_score`.
- GLUE leaderboard: tasks with several metrics (MRPC/QQP: F1 + accuracy, STS-B: Pearson + Spearman) contribute
  the unweighted mean of those (GLUE paper §3.4) -> `leaderboard_score`.
- CoNLL-2003 NER: entity-level micro P/R/F1 as conlleval.pl computes them -> `ner_scores`, `entity_*` metrics.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from electra_bench.registry import Registry, did_you_mean

# seqeval's default mode (no `mode`/`scheme` argument) reproduces conlleval.pl: a span starts at B-X, or at an
# I-X that does not continue a span of type X. `mode="strict", scheme=IOB2` scores the same predictions lower
# (stack-notes.md "seqeval"), so the mode is part of the result: records must carry this string.
NER_METRIC_MODE = "seqeval-default(conlleval)"


# The task kinds (TaskSpec.kind, tasks/base.py), declared here, where metrics name the kinds they score: tasks/ is
# the floor above and imports it.
TaskKind = Literal["classification", "regression", "tagging"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[Sequence[Any], Sequence[Any]], float]  # fn(preds, labels) -> raw value
    higher_is_better: bool
    scale: float  # reported value = raw * scale (100: percentage points, as in the paper's tables)
    label: str  # column header in tables
    kinds: frozenset[str]  # the task kinds whose predictions it scores (class ids, floats, tag sequences)
    n_labels: int | None = None  # the exact number of labels it needs (binary F1: 2); None: any the kind allows
    note: str = ""  # what it computes, where the name does not say (quoted when a task cannot use it)

    def __post_init__(self) -> None:
        if not self.kinds or not self.kinds <= set(TASK_KINDS):
            raise ValueError(f"metric '{self.name}': kinds {sorted(self.kinds)} must be some of {list(TASK_KINDS)}")

    def misfit(self, kind: str, n_labels: int) -> str | None:
        """Why this metric cannot score a task of `kind` with `n_labels` labels (class names or tags), or None."""
        if kind in self.kinds and self.n_labels in (None, n_labels):
            return None
        what = f" ({self.note})" if self.note else ""
        needs = " or ".join(sorted(self.kinds)) + " tasks" + (f" with exactly {self.n_labels} labels"
                                                               if self.n_labels else "")
        task = "a regression task" if kind == "regression" else f"a {kind} task with {n_labels} labels"
        return (f"metric '{self.name}'{what} scores {needs}, not {task}; metrics for this task: "
                f"{', '.join(metrics_for(kind, n_labels)) or 'none'}")

    @property
    def direction(self) -> str:
        """Optuna's study direction for this metric."""
        return "maximize" if self.higher_is_better else "minimize"

    def __call__(self, preds: Sequence[Any], labels: Sequence[Any]) -> float:
        if len(preds) != len(labels):
            raise ValueError(f"metric '{self.name}': {len(preds)} predictions but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError(f"metric '{self.name}': no examples")
        return float(self.fn(preds, labels))


METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    return METRICS.register(metric.name, metric)


def metrics_for(kind: str, n_labels: int) -> list[str]:
    """The registered metrics that can score a task of `kind` with `n_labels` labels, in registry order."""
    return [name for name, m in METRICS.items() if kind in m.kinds and m.n_labels in (None, n_labels)]


@dataclass(frozen=True)
class MetricFamily:
    """Record metrics derived from a task's scores, keyed `<family>/...` (the robustness metrics of robustness.py):
    `direction` "lower" (a drop: lower is better) or "headline" (a score level: as the task's headline)."""

    name: str
    direction: Literal["lower", "headline"]


METRIC_FAMILIES: Registry[MetricFamily] = Registry("metric family")
for _name, _direction in (("robust", "headline"), ("robust_auc", "headline"),  # levels on the metric's scale
                          ("robust_drop", "lower"), ("robust_rel_drop", "lower")):  # clean - perturbed (%)
    METRIC_FAMILIES.register(_name, MetricFamily(_name, _direction))


def higher_is_better(key: str, headline_higher: bool) -> bool:
    """Direction of any metric key a fine-tuning record carries: a registered metric (`accuracy`), one on another dev
    split (`accuracy@dev_mismatched`), or a derived family (`robust_drop/char_typo/0.1`); `headline_higher`: the
    direction of the record's headline, which the "headline" families follow. Unknown keys raise ValueError."""
    base = key.split("@")[0]
    if base in METRICS:
        return METRICS.get(base).higher_is_better
    family = key.split("/")[0]
    if "/" in key and family in METRIC_FAMILIES:
        return headline_higher if METRIC_FAMILIES.get(family).direction == "headline" else False
    known = [*METRICS.names(), *METRIC_FAMILIES.names()]
    raise ValueError(f"'{key}' is not a registered metric or metric family{did_you_mean(family, known)}; "
                     f"families: {', '.join(f + '/...' for f in METRIC_FAMILIES.names())}")


def _sk():
    # deferred: scikit-learn (with scipy) costs ~0.5 s and ~40 MB to import; `validate` and `plan` never score
    from sklearn import metrics as sk

    return sk


def _accuracy(preds, labels) -> float:
    return _sk().accuracy_score(labels, preds)


def _f1(preds, labels) -> float:
    # Binary F1 of the positive class 1 (MRPC "equivalent", QQP "duplicate"), as GLUE and HF `evaluate` glue do.
    return _sk().f1_score(labels, preds, pos_label=1, average="binary", zero_division=0.0)


def _f1_average(average: str) -> Callable[[Sequence, Sequence], float]:
    # Multi-class F1 over the classes present in gold or predictions (scikit-learn's default `labels`): macro is
    # the unweighted mean of per-class F1, micro pools TP/FP/FN over classes (for one label per example it equals
    # accuracy). A class never predicted has F1 0, not a warning.
    def f1(preds, labels) -> float:
        return _sk().f1_score(labels, preds, average=average, zero_division=0.0)

    return f1


def _mcc(preds, labels) -> float:
    # scikit-learn returns 0.0 when a row or column of the confusion matrix is empty (e.g. constant predictions).
    return _sk().matthews_corrcoef(labels, preds)


def _correlation(name: str) -> Callable[[Sequence, Sequence], float]:
    def corr(preds, labels) -> float:
        import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing
        from scipy import stats  # deferred: scipy.stats costs ~1 s to import; `validate` and `plan` never score

        fn = getattr(stats, name)
        # A constant prediction vector has no defined correlation (SciPy gives NaN with a warning). Report 0.0,
        # the same convention scikit-learn uses for MCC, so a collapsed tiny model scores "no correlation"
        # instead of poisoning seed medians and Optuna with NaN.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            value = fn(np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)).statistic
        return 0.0 if math.isnan(value) else float(value)

    return corr


def _entity(key: str) -> Callable[[Sequence, Sequence], float]:
    def score(preds, labels) -> float:
        return ner_scores(labels, preds)[key]

    return score


CLASSIFICATION, REGRESSION, TAGGING = frozenset({"classification"}), frozenset({"regression"}), frozenset({"tagging"})
for _m in (
    Metric("accuracy", _accuracy, True, 100.0, "Acc", CLASSIFICATION),
    Metric("f1", _f1, True, 100.0, "F1", CLASSIFICATION, n_labels=2,
           note="binary F1 of the positive class, the second of `labels`"),
    Metric("f1_macro", _f1_average("macro"), True, 100.0, "Macro F1", CLASSIFICATION),
    Metric("f1_micro", _f1_average("micro"), True, 100.0, "Micro F1", CLASSIFICATION),
    Metric("mcc", _mcc, True, 100.0, "MCC", CLASSIFICATION),  # multi-class MCC (Gorodkin's R_K) beyond 2 labels
    Metric("pearson", _correlation("pearsonr"), True, 100.0, "Pearson", REGRESSION),
    Metric("spearman", _correlation("spearmanr"), True, 100.0, "Spearman", REGRESSION),
    # Over sequences of tag strings (one list per sentence); see NER_METRIC_MODE.
    Metric("entity_f1", _entity("f1"), True, 100.0, "Entity F1", TAGGING),
    Metric("entity_precision", _entity("precision"), True, 100.0, "Entity P", TAGGING),
    Metric("entity_recall", _entity("recall"), True, 100.0, "Entity R", TAGGING),
):
    register_metric(_m)


def ner_scores(true_tag_seqs: Sequence[Sequence[str]], pred_tag_seqs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level micro P/R/F1 (conlleval-compatible, see NER_METRIC_MODE), per entity type, and a token report.

    Returns {"precision", "recall", "f1", "mode", "per_type": {type: {precision, recall, f1, support}},
    "token_report": scikit-learn classification_report dict over the flattened tags, O included}.
    """
    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(f"ner_scores: {len(true_tag_seqs)} gold sentences but {len(pred_tag_seqs)} predicted")
    y_true = [list(s) for s in true_tag_seqs]
    y_pred = [list(s) for s in pred_tag_seqs]
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise ValueError(f"ner_scores: sentence {i} has {len(t)} gold tags but {len(p)} predicted")
    from seqeval import metrics as seqeval_metrics  # deferred: seqeval imports scikit-learn (see _sk)

    # zero_division=0: a type never predicted has precision 0, not a warning (conlleval prints 0.00 too).
    report = seqeval_metrics.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        name: {"precision": float(r["precision"]), "recall": float(r["recall"]),
               "f1": float(r["f1-score"]), "support": int(r["support"])}
        for name, r in report.items() if not name.endswith(" avg")
    }
    flat_true = [tag for s in y_true for tag in s]
    flat_pred = [tag for s in y_pred for tag in s]
    token_report = _sk().classification_report(flat_true, flat_pred, output_dict=True, zero_division=0)
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]), "f1": float(micro["f1-score"]),
            "mode": NER_METRIC_MODE, "per_type": per_type, "token_report": token_report}


def _as_tag_strings(seqs: Sequence[Sequence[Any]], tag_set: Sequence[str]) -> list[list[str]]:
    """Tag ids -> tag strings (model outputs are ids into the task's tag set); strings pass through."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    return [[tag_set[t] if isinstance(t, (int, np.integer)) else t for t in seq] for seq in seqs]


def compute_metrics(spec: Any, preds: Sequence[Any], labels: Sequence[Any]) -> dict[str, float]:
    """All of the task's metrics (raw, unscaled), keyed by metric name.

    `spec` is a TaskSpec (anything with `.kind`, `.labels`, `.metrics`). Tagging tasks take one sequence per
    sentence, of tag ids into `spec.labels` or of tag strings.
    """
    if spec.kind == "tagging":
        preds, labels = _as_tag_strings(preds, spec.labels), _as_tag_strings(labels, spec.labels)
    return {name: METRICS.get(name)(preds, labels) for name in spec.metrics}


def headline(spec: Any, metrics: Mapping[str, float]) -> float:
    """The task's paper headline metric (MCC CoLA, Spearman STS-B, entity F1 NER, accuracy otherwise)."""
    if spec.headline not in metrics:
        raise KeyError(f"task '{spec.name}': headline metric '{spec.headline}' missing; got {sorted(metrics)}")
    return float(metrics[spec.headline])


def glue_score(headlines: Mapping[str, float]) -> float:
    """ELECTRA's GLUE score: the plain mean of per-task headline metrics (Paper §3.1; 8 dev tasks, no WNLI).

    Which tasks enter is the caller's choice (the suite's task list); this only averages.
    """
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    if not headlines:
        raise ValueError("glue_score: no tasks")
    return float(np.mean([float(v) for v in headlines.values()]))


def leaderboard_score(per_task_metrics: Mapping[str, Mapping[str, float]]) -> float:
    """GLUE leaderboard-style score: mean over tasks of the unweighted mean of each task's metrics.

    Pass `compute_metrics` outputs of GLUE tasks: MRPC/QQP then contribute mean(accuracy, F1) and STS-B
    mean(Pearson, Spearman), as the GLUE leaderboard does (GLUE paper §3.4).
    """
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    if not per_task_metrics:
        raise ValueError("leaderboard_score: no tasks")
    task_means = []
    for task, values in per_task_metrics.items():
        if not values:
            raise ValueError(f"leaderboard_score: task '{task}' has no metrics")
        task_means.append(np.mean([float(v) for v in values.values()]))
    return float(np.mean(task_means))
