"""The speed benchmarks run end to end in --quick mode and write complete, positive records.

Speed goals (ratios, MFU) are checked by running the benchmarks on a quiet machine, never here: a timed unit test
on a shared machine is a flaky test."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
WORDS = ["the", "film", "movie", "plot", "was", "is", "good", "great", "bad", "dull", "a", "very"]


@pytest.fixture
def bench(monkeypatch):
    """Imports a benchmark script; the tests run them on one thread (a busy shared machine makes tiny multi-threaded
    ops wait on each other) and restore torch's thread count afterwards."""
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their shared `_timing` from their own folder
    threads = torch.get_num_threads()
    yield lambda name: importlib.import_module(name)
    torch.set_num_threads(threads)


def tiny_sst2(root: Path, n: int = 40) -> Path:
    """A data root holding a made-up SST-2 train split, and a WordPiece vocab for it; returns the vocab path."""
    sst = root / "glue" / "SST-2"
    sst.mkdir(parents=True)
    rows = ["sentence\tlabel"] + [f"the {WORDS[i % 4 + 1]} was {'very ' * (i % 5)}{WORDS[6 + i % 4]}\t{i % 2}"
                                  for i in range(n)]
    (sst / "train.tsv").write_text("\n".join(rows) + "\n")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return vocab


def assert_positive(values: dict, keys: list[str]) -> None:
    for k in keys:
        assert values[k] > 0, k


def test_pretrain_step_quick(bench, tmp_path):
    rec = bench("pretrain_step").main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "pretrain_step.json").read_text())
    assert saved["variants"].keys() == rec["variants"].keys()
    assert {"reference fp32", "ours fp32"} <= saved["variants"].keys()
    for v in saved["variants"].values():
        assert_positive(v, ["tokens_per_s", "step_ms_median", "mfu", "ratio_vs_reference"])
        assert v["precision"] in saved["peak_gflops"]
    assert saved["variants"]["reference fp32"]["ratio_vs_reference"] == pytest.approx(1.0)
    assert_positive(saved, ["train_flops_per_step", "batch_size", "seq_len"])
    assert all(g > 0 for g in saved["peak_gflops"].values())
    assert len(saved["step_s"]["ours fp32"]) == saved["steps"] == 2
    assert saved["machine"]["threads"] > 0 and saved["machine"]["torch"]
    assert saved["command"].startswith("python benchmarks/pretrain_step.py --quick --threads 1")
    md = (tmp_path / "pretrain_step.md").read_text()
    assert "| reference fp32 |" in md and "| ours fp32 |" in md and saved["command"] in md


def test_finetune_step_quick(bench, tmp_path):
    vocab = tiny_sst2(tmp_path / "data")
    out = tmp_path / "out"
    bench("finetune_step").main(["--quick", "--threads", "1", "--examples", "24", "--batch-size", "4",
                                 "--data-root", str(tmp_path / "data"), "--vocab", str(vocab), "--out", str(out)])
    saved = json.loads((out / "finetune_step.json").read_text())
    assert saved["examples"] == 24 and saved["examples_in_split"] == 40
    assert saved["variants"].keys() == {"reference", "ours"}
    for v in saved["variants"].values():
        assert_positive(v, ["examples_per_s", "epoch_s", "batches", "tokens_computed", "padding_efficiency"])
        assert len(v["chunk_examples_per_s"]) == saved["chunks"]
    assert saved["variants"]["reference"]["tokens_computed"] == 24 * saved["max_length"]  # padded to max_length
    assert saved["ratio_ours_vs_reference"] > 0
    md = (out / "finetune_step.md").read_text()
    assert "N = 24 examples (capped from 40)" in md and "--examples 24" in md


def test_pretrain_loop_quick(bench, tmp_path):
    """The side-by-side of the no-sync loop and the previous one (read from git) runs and records both."""
    import subprocess

    module = bench("pretrain_loop")
    if subprocess.run(["git", "cat-file", "-e", f"{module.PREVIOUS_COMMIT}^{{commit}}"], capture_output=True,
                      cwd=BENCH).returncode:
        pytest.skip(f"this clone lacks commit {module.PREVIOUS_COMMIT} (the previous loop is read from git)")
    rec = module.main(["--quick", "--threads", "1", "--reps", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "pretrain_loop.json").read_text())
    assert saved["runs"].keys() == {"previous", "no-sync"} and saved == json.loads(json.dumps(rec))
    for runs in saved["runs"].values():
        assert len(runs) == 2 and all(len(r["windows_tokens_per_s"]) == 3 for r in runs)  # 6 steps, log every 2
        assert all(r["tokens_per_s"] > 0 for r in runs)
    assert saved["ratio_nosync_vs_previous"] == pytest.approx(
        saved["tokens_per_s"]["no-sync"] / saved["tokens_per_s"]["previous"])
    assert "Ratio no-sync / previous" in (tmp_path / "pretrain_loop.md").read_text()


@pytest.mark.parametrize("name", ["pretrain_step", "finetune_step", "pretrain_loop"])
def test_help_says_what_is_measured(bench, name, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench(name).main(["--help"])
    assert exit_.value.code == 0
    assert "How to read the output" in capsys.readouterr().out
