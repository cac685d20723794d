"""Metrics: hand-computed cases, the registry contract, and the GLUE / leaderboard averages."""
import json
import math

import pytest

from electra_bench.metrics import (
    METRICS,
    NER_METRIC_MODE,
    Metric,
    compute_metrics,
    glue_score,
    headline,
    leaderboard_score,
    ner_scores,
)
from electra_bench.tasks import TASKS

# Binary case with TP=3, FN=1, FP=1, TN=2 (labels first four positive).
LABELS = [1, 1, 1, 1, 0, 0, 0]
PREDS = [1, 1, 1, 0, 1, 0, 0]


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_registry_contract(name):
    metric = METRICS.get(name)
    assert metric.name == name and metric.label and metric.scale == 100.0
    assert metric.direction == ("maximize" if metric.higher_is_better else "minimize")


def test_binary_metrics_by_hand():
    assert METRICS.get("accuracy")(PREDS, LABELS) == pytest.approx(5 / 7)
    # P = 3/4, R = 3/4.
    assert METRICS.get("f1")(PREDS, LABELS) == pytest.approx(0.75)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 1) / sqrt(4*4*3*3) = 5/12.
    assert METRICS.get("mcc")(PREDS, LABELS) == pytest.approx(5 / 12)


def test_f1_positive_class_is_one():
    # Swapping which class is "positive" changes F1: only class 1 counts (P = 1/2, R = 1/1 for class 1).
    assert METRICS.get("f1")([1, 1, 0], [1, 0, 0]) == pytest.approx(2 / 3)


def test_correlations_by_hand():
    # Pearson: deviations x = [-1.5,-.5,.5,1.5], y = [-1.75,-.75,.25,2.25]; 6.5 / sqrt(5 * 8.75).
    assert METRICS.get("pearson")([1, 2, 3, 4], [1, 2, 3, 5]) == pytest.approx(6.5 / math.sqrt(43.75))
    assert METRICS.get("spearman")([1, 2, 3, 4], [1, 2, 3, 5]) == pytest.approx(1.0)
    # Spearman with one swapped pair: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 12 / 60.
    assert METRICS.get("spearman")([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(0.8)


def test_degenerate_predictions_score_zero_not_nan():
    assert METRICS.get("pearson")([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert METRICS.get("spearman")([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert METRICS.get("mcc")([1, 1, 1], [0, 1, 1]) == 0.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        METRICS.get("accuracy")([1, 0, 1], [1, 0])


GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC"]]


def test_ner_scores_by_hand():
    # Gold spans: PER[0:2], LOC[3], ORG[0:2] (3). Predicted: PER[0:2] (right), ORG[3], ORG[0:1] (wrong boundary),
    # MISC[2] (4). P = 1/4, R = 1/3, F1 = 2PR/(P+R) = 2/7.
    s = ner_scores(GOLD, PRED)
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((1 / 4, 1 / 3, 2 / 7))
    assert s["mode"] == NER_METRIC_MODE
    assert s["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert s["per_type"]["ORG"]["precision"] == 0.0 and s["per_type"]["ORG"]["support"] == 1
    assert s["per_type"]["MISC"]["support"] == 0
    # Token level: 7 tokens, 4 right (positions 0, 1, 2, 4); O appears in the report too.
    assert s["token_report"]["accuracy"] == pytest.approx(4 / 7)
    assert "O" in s["token_report"]


def test_ner_default_mode_is_conlleval():
    # conlleval starts a span at an I- tag that does not continue one; IOB2-strict would score this 0.
    assert ner_scores([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]])["f1"] == 1.0


def test_ner_misaligned_sentence_raises():
    with pytest.raises(ValueError, match="sentence 0"):
        ner_scores([["O", "O"]], [["O"]])


def test_entity_metrics_take_preds_first():
    assert METRICS.get("entity_precision")(PRED, GOLD) == pytest.approx(1 / 4)
    assert METRICS.get("entity_recall")(PRED, GOLD) == pytest.approx(1 / 3)


def test_compute_metrics_and_headline():
    stsb = TASKS.get("stsb")
    m = compute_metrics(stsb, [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 3.0, 4.0])
    assert set(m) == set(stsb.metrics) and m["spearman"] == pytest.approx(0.8)
    assert headline(stsb, m) == pytest.approx(0.8)
    with pytest.raises(KeyError, match="spearman"):
        headline(stsb, {"pearson": 0.5})


def test_compute_metrics_tagging_accepts_tag_ids():
    conll = TASKS.get("conll2003")
    ids = [[conll.labels.index(t) for t in s] for s in GOLD], [[conll.labels.index(t) for t in s] for s in PRED]
    m = compute_metrics(conll, ids[1], ids[0])
    assert m == pytest.approx({"entity_f1": 2 / 7, "entity_precision": 1 / 4, "entity_recall": 1 / 3})


def test_glue_and_leaderboard_scores():
    assert glue_score({"cola": 0.5, "sst2": 0.9}) == pytest.approx(0.7)
    per_task = {"mrpc": {"accuracy": 0.8, "f1": 0.9}, "stsb": {"pearson": 0.7, "spearman": 0.9}, "cola": {"mcc": 0.5}}
    # MRPC and STS-B each count once, as the mean of their two metrics: mean(0.85, 0.8, 0.5).
    assert leaderboard_score(per_task) == pytest.approx((0.85 + 0.8 + 0.5) / 3)
    with pytest.raises(ValueError):
        glue_score({})


def test_every_record_metric_key_has_a_direction():
    """Registered metrics, their values on other dev splits, and the derived robustness families (metrics.py)."""
    from electra_bench.metrics import higher_is_better

    assert higher_is_better("accuracy", False) and higher_is_better("accuracy@dev_mismatched", False)
    assert higher_is_better("robust_auc/char_typo", True) and not higher_is_better("robust_auc/char_typo", False)
    assert higher_is_better("robust/generator/0.1/mcc", True)
    assert not higher_is_better("robust_drop/char_typo/0.1", True) and not higher_is_better("robust_rel_drop/all", True)
    with pytest.raises(ValueError, match="did you mean 'robust_drop'"):
        higher_is_better("robust_dorp/char_typo/0.1", True)
    with pytest.raises(ValueError, match="not a registered metric or metric family"):
        higher_is_better("robust_drop", True)  # a family needs its `/...` part


# --- which tasks a metric can score (Metric.kinds / n_labels), checked when a suite is loaded -------------------

# One tiny prediction set per task shape: (kind, number of labels) -> (labels, preds), in the form the fine-tune
# hands compute_metrics (class ids, floats, one list of tag ids per sentence).
TAGS = ("O", "B-PER", "I-PER", "B-LOC")
SHAPES = {
    ("classification", 2): (("0", "1"), [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]),
    ("classification", 3): (("a", "b", "c"), [0, 1, 2, 1, 0, 2], [0, 2, 2, 1, 0, 1]),
    ("regression", 0): ((), [0.5, 1.0, 2.5, 4.0], [1.0, 1.5, 2.0, 4.5]),
    ("tagging", len(TAGS)): (TAGS, [[1, 2, 0, 3], [0, 3]], [[1, 2, 0, 0], [0, 3]]),
}


def test_every_task_kind_has_a_prediction_set():
    """The grid below covers every kind a task can be (and a metric can name): a new kind needs its shape here."""
    from electra_bench.metrics import TASK_KINDS

    assert {kind for kind, _ in SHAPES} == set(TASK_KINDS)


def _suite_with(tmp_path, kind: str, labels: tuple, metric: str):
    """A suite whose one custom task has this kind, these labels and only `metric`, loaded as `validate` loads it."""
    from electra_bench.config import load_suite

    task = {"name": "probe", "kind": kind, "format": "conll" if kind == "tagging" else "glue_tsv", "path": "custom/p",
            "files": {"train": "train.txt", "dev": "dev.txt"}, "header": kind != "tagging",
            "text_columns": [0] if kind == "tagging" else ["sentence"], "label_column": -1 if kind == "tagging"
            else "label", "labels": list(labels), "metrics": [metric], "headline": metric}
    (tmp_path / "s.yaml").write_text(json.dumps({"name": "probe", "tasks": ["probe"], "custom_tasks": [task]},
                                                indent=1))
    return load_suite(tmp_path / "s.yaml")


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{k}{n}" for k, n in SHAPES])
@pytest.mark.parametrize("name", METRICS.names())
def test_metric_accepted_or_refused_at_load(name, shape, tmp_path):
    """Every metric x every task shape: a metric the registry declares fit is accepted at load and computes a finite
    value on the shape's predictions; any other is refused at load, naming the file, the metrics item and why."""
    from electra_bench.config import ConfigError

    kind, n = shape
    labels, gold, preds = SHAPES[shape]
    why = METRICS.get(name).misfit(kind, n)
    if why is None:
        spec = _suite_with(tmp_path, kind, labels, name).tasks["probe"]
        value = compute_metrics(spec, preds, gold)[name]
        assert math.isfinite(value) and -1.0 <= value <= 1.0, value
    else:
        with pytest.raises(ConfigError) as err:
            _suite_with(tmp_path, kind, labels, name)
        e = err.value
        assert (e.path, e.message) == ("custom_tasks.0.metrics.0", why)
        assert f"{tmp_path / 's.yaml'}:{e.line}:" in str(e) and e.line is not None
        assert f"metric '{name}'" in why and (f"a {kind} task" in why or kind == "regression")


def test_every_metric_fits_some_builtin_task_and_every_builtin_task_fits_its_metrics():
    """The declarations hold for the built-in tasks (they validate at import) and no metric is dead weight."""
    from electra_bench.metrics import metrics_for

    fits = {m for spec in TASKS.names() for m in metrics_for(TASKS.get(spec).kind, len(TASKS.get(spec).labels))}
    assert fits == set(METRICS.names())
    for spec in map(TASKS.get, TASKS.names()):
        assert all(METRICS.get(m).misfit(spec.kind, len(spec.labels)) is None for m in spec.metrics), spec.name


def test_binary_f1_is_refused_for_three_classes_and_points_to_the_multiclass_ones():
    why = METRICS.get("f1").misfit("classification", 3)
    assert why.startswith("metric 'f1' (binary F1 of the positive class, the second of `labels`) scores "
                          "classification tasks with exactly 2 labels, not a classification task with 3 labels")
    assert why.endswith("metrics for this task: accuracy, f1_macro, f1_micro, mcc")
    assert METRICS.get("pearson").misfit("classification", 2).startswith(
        "metric 'pearson' scores regression tasks, not a classification task with 2 labels")
    with pytest.raises(ValueError, match="kinds"):
        Metric("x", len, True, 100.0, "X", frozenset({"ranking"}))


# 3 classes, 9 examples. Per class (TP, FP, FN): 0 -> (2, 1, 1), 1 -> (1, 1, 1), 2 -> (3, 1, 1).
MC_LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]
MC_PREDS = [0, 0, 1, 1, 2, 2, 2, 2, 0]


def test_multiclass_f1_by_hand():
    # F1 = 2TP / (2TP + FP + FN): class 0: 4/6, class 1: 2/4, class 2: 6/8. Macro: their mean = (2/3 + 1/2 + 3/4) / 3.
    assert METRICS.get("f1_macro")(MC_PREDS, MC_LABELS) == pytest.approx(23 / 36)
    # Micro pools the counts: TP 6, FP 3, FN 3 -> 12 / 18; with one label per example this is accuracy (6/9).
    assert METRICS.get("f1_micro")(MC_PREDS, MC_LABELS) == pytest.approx(2 / 3)
    assert METRICS.get("f1_micro")(MC_PREDS, MC_LABELS) == pytest.approx(METRICS.get("accuracy")(MC_PREDS, MC_LABELS))


def test_multiclass_f1_never_predicted_and_absent_classes():
    # All predicted 0: class 0 P 1/3, R 1 -> F1 1/2; classes 1 and 2 never predicted -> F1 0 (no warning). Macro 1/6.
    assert METRICS.get("f1_macro")([0, 0, 0], [0, 1, 2]) == pytest.approx(1 / 6)
    assert METRICS.get("f1_micro")([0, 0, 0], [0, 1, 2]) == pytest.approx(1 / 3)
    # On two classes macro F1 is the mean of both classes' F1 (binary f1 is class 1's alone): (3/4 + 2/3) / 2.
    assert METRICS.get("f1_macro")(PREDS, LABELS) == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert METRICS.get("f1_macro").higher_is_better and METRICS.get("f1_micro").direction == "maximize"
