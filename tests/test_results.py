"""Records file I/O, seed aggregation and claim verdicts (electra_bench/results.py), on hand-made records."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from electra_bench.results import (
    RecordError,
    TornRecordWarning,
    aggregate,
    append_record,
    bootstrap_ci,
    glue_score,
    pretrain_summary,
    read_records,
)
from electra_bench.verdicts import evaluate_claims

_counter = iter(range(10**6))


def rec(cell: str, task: str, seed: int, value: float, *, flags=(), hib=True, axes=None, label=None, **kw) -> dict:
    """One fine-tuning record in the documented format."""
    r = {"suite": "t", "unit": "finetune", "run_key": f"k{next(_counter)}", "cell": cell,
         "axes": axes if axes is not None else {"pretrain.generator_size": float(cell)} if _num(cell) else {},
         "task": task, "seed": seed, "metrics": {"accuracy": value}, "headline_metric": "accuracy",
         "headline": value, "higher_is_better": hib, "flags": list(flags), "code_version": "git:test",
         "finished_at": "2026-11-28T18:00:00Z", **kw}
    if label:
        r["label"] = label
    return r


def _num(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def cell_runs(cell: str, task: str, values, **kw) -> list[dict]:
    return [rec(cell, task, seed, v, **kw) for seed, v in enumerate(values)]


# ------------------------------------------------------------------------------------------------ aggregation

def test_aggregate_median_mean_sd_ci_by_hand():
    (s,) = aggregate(cell_runs("a", "sst2", [3.0, 1.0, 5.0, 2.0, 4.0]))
    assert (s.cell, s.task, s.metric, s.n) == ("a", "sst2", "accuracy", 5)
    assert s.values == (3.0, 1.0, 5.0, 2.0, 4.0)  # seed order
    assert s.median == 3.0 and s.mean == 3.0
    assert s.sd == pytest.approx(math.sqrt(2.5))  # sample sd, ddof=1
    assert 1.0 <= s.ci_low <= 3.0 <= s.ci_high <= 5.0 and s.ci_low < s.ci_high
    assert aggregate(cell_runs("a", "sst2", [3.0, 1.0, 5.0, 2.0, 4.0]))[0].ci_low == s.ci_low  # seeded


def test_aggregate_keeps_every_pretraining_seed_and_reads_records_without_one_as_one_seed():
    runs = cell_runs("a", "sst2", [1.0, 2.0]) + [rec("a", "sst2", s, v, pretrain_seed=1)
                                                 for s, v in enumerate([5.0, 6.0])]
    (s,) = aggregate(runs)
    assert s.n == 4 and s.n_pretrain == 2 and s.pretrain_seeds == (None, None, 1, 1) and s.n_superseded == 0
    assert s.values == (1.0, 2.0, 5.0, 6.0) and s.seeds == (0, 1, 0, 1)
    (legacy,) = aggregate(cell_runs("a", "sst2", [1.0, 2.0]))
    assert legacy.n_pretrain == 1


def test_aggregate_single_run_has_no_sd_and_point_ci():
    (s,) = aggregate(cell_runs("a", "rte", [60.0]))
    assert s.median == 60.0 and math.isnan(s.sd) and (s.ci_low, s.ci_high) == (60.0, 60.0)


def test_degenerate_and_diverged_are_excluded_and_counted():
    runs = cell_runs("a", "cola", [50.0, 52.0, 54.0])
    runs += [rec("a", "cola", 3, 0.0, flags=["degenerate"]), rec("a", "cola", 4, 51.0, flags=["diverged"]),
             rec("a", "cola", 5, float("nan"))]  # a non-finite headline counts as diverged even unflagged
    (s,) = aggregate(runs)
    assert s.n == 3 and s.median == 52.0 and s.mean == 52.0
    assert (s.n_degenerate, s.n_diverged) == (1, 2)
    assert 0.0 not in s.values


def test_rerun_of_a_seed_supersedes_the_older_record():
    old = rec("a", "sst2", 0, 10.0, finished_at="2026-11-28T10:00:00Z")
    new = rec("a", "sst2", 0, 90.0, finished_at="2026-11-29T10:00:00Z")
    (s,) = aggregate([new, old, rec("a", "sst2", 1, 80.0)])
    assert s.values == (90.0, 80.0) and s.n_superseded == 1


def test_glue_score_is_mean_of_task_medians_over_listed_tasks_only():
    runs = cell_runs("a", "sst2", [90, 92, 91]) + cell_runs("a", "rte", [60, 70, 65]) + cell_runs("a", "cola", [1])
    runs += cell_runs("b", "sst2", [80, 80, 80])
    scores = glue_score(aggregate(runs), ["sst2", "rte"])
    assert scores["a"].value == pytest.approx((91 + 65) / 2) and scores["a"].tasks == ("sst2", "rte")
    assert scores["b"].value is None and scores["b"].missing == ("rte",)


def test_bootstrap_is_deterministic():
    a = [90.0, 91.0, 92.0, 90.5, 91.5]
    assert bootstrap_ci(a, np.mean) == bootstrap_ci(a, np.mean)


def test_pretrain_summary_medians_over_pretrain_seeds():
    base = {"suite": "t", "unit": "pretrain", "cell": "a", "axes": {}, "task": None, "code_version": "v",
            "train_flops": 1e17, "params": 14_000_000}
    runs = [{**base, "run_key": f"p{i}", "seed": i, "metrics": {"disc_recall": v}, "flags": f}
            for i, (v, f) in enumerate([(70.0, []), (80.0, []), (75.0, []), (1.0, ["diverged"])])]
    s = pretrain_summary(runs)["a"]
    assert s["disc_recall"] == 75.0 and s["train_flops"] == 1e17 and s["params"] == 14e6
    assert (s["n_pretrain"], s["n_pretrain_diverged"]) == (3, 1)


# ------------------------------------------------------------------------------------------------- file I/O

def test_append_then_read_round_trips_and_dedupes_by_run_key(tmp_path):
    path = tmp_path / "results" / "s" / "records.jsonl"
    first, second = rec("a", "sst2", 0, 1.0, run_key="same"), rec("a", "sst2", 0, 2.0, run_key="same")
    append_record(path, first)
    append_record(path, rec("a", "sst2", 1, 3.0))
    append_record(path, second)
    text = path.read_text()
    assert text.count("\n") == 3 and text.endswith("\n")
    got = read_records(path)
    assert [r["headline"] for r in got] == [3.0, 2.0]  # last write of run_key "same" wins
    assert len(read_records(path, unique=False)) == 3


def test_invalid_line_raises_with_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rec("a", "sst2", 0, 1.0)) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"r\.jsonl:2: not a JSON record"):
        read_records(path)
    bad = rec("a", "sst2", 0, 1.0)
    del bad["headline"]
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(RecordError, match=r"r\.jsonl:1: missing key\(s\) headline"):
        read_records(path)
    path.write_text("\n")
    with pytest.raises(RecordError, match=r"r\.jsonl:1"):
        read_records(path)


def test_torn_final_line_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "r.jsonl"
    good = json.dumps(rec("a", "sst2", 0, 1.0))
    path.write_text(good + "\n" + good[:40])  # a crash mid-write: no trailing newline
    with pytest.warns(TornRecordWarning, match=r"r\.jsonl:2: torn final line"):
        assert len(read_records(path)) == 1
    # A torn line that is not last is corruption, not a crash artefact: it raises.
    path.write_text(good + "\n" + good[:40] + "\n" + good + "\n")
    with pytest.raises(RecordError, match=r"r\.jsonl:2"):
        read_records(path)


def test_append_after_a_crash_sets_the_torn_tail_aside(tmp_path):
    path = tmp_path / "r.jsonl"
    good = json.dumps(rec("a", "sst2", 0, 1.0))
    path.write_text(good + "\n" + good[:40])
    with pytest.warns(TornRecordWarning, match="moved to"):
        append_record(path, rec("a", "sst2", 1, 2.0))
    assert [r["seed"] for r in read_records(path)] == [0, 1]
    assert (tmp_path / "r.jsonl.torn").read_text() == good[:40] + "\n"


def test_append_refuses_an_invalid_record(tmp_path):
    with pytest.raises(RecordError, match="unit 'pretrian'.*did you mean 'pretrain'"):
        append_record(tmp_path / "r.jsonl", rec("a", "sst2", 0, 1.0, unit="pretrian"))
    assert not (tmp_path / "r.jsonl").exists() or (tmp_path / "r.jsonl").read_text() == ""


# -------------------------------------------------------------------------------------------------- verdicts

WIN = [90.0, 91.0, 92.0, 90.5, 91.5]
LOSS = [80.0, 81.0, 79.0, 80.5, 79.5]
NEAR = [90.2, 91.3, 91.8, 90.4, 90.8]  # median 90.8, just below WIN's 91.0


def pair(better: str, worse: str, metric: str = "sst2") -> dict:
    return {"name": "c", "better": better, "worse": worse, "metric": metric}


def test_pairwise_reproduced_contradicted_inconclusive():
    runs = cell_runs("0.25", "sst2", WIN) + cell_runs("1.0", "sst2", LOSS) + cell_runs("0.5", "sst2", NEAR)
    claims = [pair("0.25", "1.0"), pair("1.0", "0.25"), pair("0.25", "0.5")]
    v = evaluate_claims(runs, claims)
    assert [x.verdict for x in v] == ["reproduced", "contradicted", "inconclusive"]
    assert v[0].diff == pytest.approx(11.0) and v[0].ci_low > 0 and v[1].ci_high < 0
    assert v[2].ci_low < 0 < v[2].ci_high


def test_pairwise_with_axis_selectors_labels_and_lower_is_better():
    runs = cell_runs("0.25", "ppl", LOSS, hib=False) + cell_runs("x", "ppl", WIN, hib=False, label="BERT", axes={})
    (v,) = evaluate_claims(runs, [pair({"pretrain.generator_size": 0.25}, "BERT", "ppl")])
    assert v.verdict == "reproduced" and v.diff == pytest.approx(11.0)  # lower is better: 80 beats 91
    assert (v.better, v.worse) == ("0.25", "BERT")


def test_glue_claim_uses_listed_tasks():
    runs = []
    for task in ("sst2", "rte"):
        runs += cell_runs("0.25", task, WIN) + cell_runs("1.0", task, LOSS)
    runs += cell_runs("1.0", "cola", [99.0] * 5)  # not a listed GLUE task: ignored
    (v,) = evaluate_claims(runs, [pair("0.25", "1.0", "glue")], glue_tasks=["sst2", "rte"])
    assert v.verdict == "reproduced" and v.diff == pytest.approx(11.0)
    with pytest.raises(ValueError, match="needs the list of GLUE tasks"):
        evaluate_claims(runs, [pair("0.25", "1.0", "glue")])


def test_too_few_runs_or_missing_cell_is_inconclusive_with_a_note():
    runs = cell_runs("0.25", "sst2", WIN[:2]) + cell_runs("1.0", "sst2", LOSS)
    v = evaluate_claims(runs, [pair("0.25", "1.0"), pair("label-not-run-yet", "1.0")])
    assert [x.verdict for x in v] == ["inconclusive", "inconclusive"]
    assert "0.25" in v[0].note and "label-not-run-yet" in v[1].note and math.isnan(v[0].diff)


def test_malformed_claims_raise():
    runs = cell_runs("0.25", "sst2", WIN) + cell_runs("0.5", "sst2", WIN)
    with pytest.raises(ValueError, match="keys"):
        evaluate_claims(runs, [{"name": "c", "better": "0.25", "metric": "sst2"}])
    with pytest.raises(ValueError, match="matches 2 cells"):
        evaluate_claims(runs, [{**pair("0.25", "0.5"), "better": {}}])
    with pytest.raises(ValueError, match="did you mean 'sst2'"):
        evaluate_claims(runs, [pair("0.25", "0.5", "sst-2")])


def best(expected: list[str], cells: list[str]) -> dict:
    return {"name": "best", "best_among": cells, "expected": expected, "metric": "sst2"}


def test_best_among():
    runs = cell_runs("0.25", "sst2", WIN) + cell_runs("0.5", "sst2", NEAR) + cell_runs("1.0", "sst2", LOSS)
    cells = ["0.25", "0.5", "1.0"]
    v = evaluate_claims(runs, [best(["0.25", "0.5"], cells), best(["1.0"], cells), best(["0.25"], cells)])
    assert v[0].verdict == "reproduced" and (v[0].better, v[0].worse) == ("0.25", "1.0")
    assert v[1].verdict == "contradicted" and (v[1].better, v[1].worse) == ("0.25", "1.0")
    # The best is expected but not clearly ahead of the best unexpected cell (0.5): inconclusive.
    assert v[2].verdict == "inconclusive" and (v[2].better, v[2].worse) == ("0.25", "0.5")


def test_best_among_defaults_to_glue_and_needs_both_sides():
    runs = cell_runs("0.25", "sst2", WIN) + cell_runs("1.0", "sst2", LOSS)
    (v,) = evaluate_claims(runs, [{"name": "b", "best_among": ["0.25", "1.0"], "expected": ["0.25"]}],
                           glue_tasks=["sst2"])
    assert v.metric == "glue" and v.verdict == "reproduced"
    (v,) = evaluate_claims(runs, [best(["0.25", "1.0"], ["0.25", "1.0"])])
    assert v.verdict == "inconclusive" and "outside" in v.note


# ------------------------------------------------------------------------------------------- robustness metrics

def robust_runs(cell: str, drop_per_rate: float, seeds=(0, 1, 2), task: str = "sst2") -> list[dict]:
    """Fine-tune records carrying robustness.summary's metrics: accuracy falls by `drop_per_rate` x rate x 10."""
    from electra_bench.robustness import summary

    out = []
    for seed in seeds:
        clean = 80.0 + seed
        scores = {(k, r): clean - drop_per_rate * r * 10 for k in ("random_token", "char_typo") for r in (0.1, 0.2)}
        r = rec(cell, task, seed, clean, label=cell)
        r["metrics"] |= summary(scores, clean, "accuracy", True)
        out.append(r)
    return out


def test_metric_view_makes_a_recorded_metric_the_headline_with_its_direction():
    from electra_bench.results import metric_view

    recs = robust_runs("ELECTRA", 2.0) + cell_runs("x", "cola", [1.0, 2.0])
    view = metric_view(recs, "robust_drop/char_typo/0.2", "sst2")
    assert [r["headline"] for r in view] == [4.0, 4.0, 4.0] and not any(r["higher_is_better"] for r in view)
    (stats,) = aggregate(view)
    assert stats.median == 4.0 and stats.metric == "robust_drop/char_typo/0.2"
    assert all(r["higher_is_better"] for r in metric_view(recs, "robust_auc/char_typo"))


def test_robustness_claims_with_a_task():
    # other fine-tuning seeds for BERT: unpaired (paired, these made-up drops would differ by a constant: no interval)
    recs = robust_runs("ELECTRA", 2.0) + robust_runs("BERT", 12.0, seeds=(3, 4, 5))
    claim = {"name": "ELECTRA degrades less", "better": "ELECTRA", "worse": "BERT", "task": "sst2",
             "metric": "robust_rel_drop/all"}
    (v,) = evaluate_claims(recs, [claim])
    assert v.verdict == "reproduced" and v.metric == "sst2 robust_rel_drop/all" and v.diff > 0
    (v,) = evaluate_claims(recs, [{**claim, "better": "BERT", "worse": "ELECTRA"}])
    assert v.verdict == "contradicted"
    (v,) = evaluate_claims(recs, [{**claim, "metric": "robust_auc/char_typo"}])  # higher AUC is better
    assert v.verdict == "reproduced"
    # any recorded metric has a direction (metrics.higher_is_better): `task:` + the headline is the plain claim
    (v,) = evaluate_claims(recs, [{**claim, "metric": "accuracy"}])
    (plain,) = evaluate_claims(recs, [{"name": "x", "better": "ELECTRA", "worse": "BERT", "metric": "sst2"}])
    assert (v.verdict, v.diff, v.ci_low) == (plain.verdict, plain.diff, plain.ci_low)
