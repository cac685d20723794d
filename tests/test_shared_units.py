"""Units shared by suites: a second suite with the same cell (same run keys) adopts the first suite's records and
pre-training instead of computing them again; its own extra units still run."""
from __future__ import annotations

import json

from test_suite_e2e import SUITE, make_data_root

from electra_bench import cli
from electra_bench.results import read_records

NO_TRACKING = ["--set", "tracking.enabled=false"]


def test_second_suite_adopts_shared_units(tmp_path, capsys):
    make_data_root(tmp_path / "data")
    fmt = dict(root=tmp_path / "data", work=tmp_path / "work", results=tmp_path / "results")
    first = tmp_path / "first.yaml"
    first.write_text(SUITE.format(**fmt).replace("name: e2e", "name: first"))
    assert cli.main(["run", str(first), "--no-progress", *NO_TRACKING]) == 0
    second = tmp_path / "second.yaml"  # same cells plus a new one: only the new cell's units may run
    second.write_text(SUITE.format(**fmt).replace("name: e2e", "name: second").replace(
        "tasks: [sst2, conll2003]", "  - {label: mask 25%, set: {pretrain.mask_prob: 0.25}}\ntasks: [sst2, conll2003]"))
    capsys.readouterr()
    assert cli.main(["run", str(second), "--no-progress", *NO_TRACKING]) == 0
    err = capsys.readouterr().err
    ones = {r["run_key"]: r for r in read_records(tmp_path / "results" / "first" / "records.jsonl")}
    twos = {r["run_key"]: r for r in read_records(tmp_path / "results" / "second" / "records.jsonl")}
    shared = set(ones) & set(twos)
    assert shared == set(ones)  # every unit of the first suite is in the second, under the same key
    for key in shared:
        assert twos[key]["shared_from"] == "first" and twos[key]["suite"] == "second"
        assert twos[key]["metrics"] == ones[key]["metrics"]
        assert twos[key]["code_version"] == ones[key]["code_version"]
    fresh = [r for k, r in twos.items() if k not in ones]
    assert fresh and all(r["cell"] == "mask 25%" and "shared_from" not in r for r in fresh)
    assert err.count("record adopted") == len(shared)
    assert not any(json.loads(p.read_text())["suite"] == "second" and p.stem in ones
                   for p in (tmp_path / "work" / "units").glob("*.json"))


def test_record_without_checkpoint_is_not_adopted(tmp_path):
    make_data_root(tmp_path / "data")
    fmt = dict(root=tmp_path / "data", work=tmp_path / "work", results=tmp_path / "results")
    first = tmp_path / "first.yaml"
    first.write_text(SUITE.format(**fmt).replace("name: e2e", "name: first"))
    assert cli.main(["run", str(first), "--no-progress", *NO_TRACKING]) == 0
    for state in (tmp_path / "work" / "pretrain").glob("*/state.pt"):
        state.unlink()  # the checkpoint is gone: its fine-tunes could not run, so pre-training runs again
    second = tmp_path / "second.yaml"
    second.write_text(SUITE.format(**fmt).replace("name: e2e", "name: second"))
    assert cli.main(["run", str(second), "--no-progress", *NO_TRACKING]) == 0
    pre = [r for r in read_records(tmp_path / "results" / "second" / "records.jsonl") if r["unit"] == "pretrain"]
    assert pre and all("shared_from" not in r for r in pre)
