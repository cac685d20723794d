"""Metrics: hand-computed cases, the registry contract, and the GLUE / leaderboard averages."""
import math

import pytest

from electra_bench.metrics import (
    METRICS,
    NER_METRIC_MODE,
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
