"""Resource errors get one clear message and lose nothing: unwritable output, full disk, unreachable tracking."""
from __future__ import annotations

import errno

import pytest
from test_suite_e2e import SUITE, make_data_root

from electra_bench import cli


@pytest.fixture
def tiny_suite(tmp_path):
    make_data_root(tmp_path / "data")
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(root=tmp_path / "data", work=tmp_path / "work", results=tmp_path / "results")
                    .replace("tasks: [sst2, conll2003]", "tasks: [sst2]").replace("seeds: [0, 1]", "seeds: [0]")
                    .replace("  - label: ELECTRA\n", ""))
    return path


def test_unwritable_results_dir(tiny_suite, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):  # root ignores permission bits, so simulate the refusal
        if "results" in self.parts:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert cli.main(["run", str(tiny_suite), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot write or read" in err and "results" in err and "Permission denied" in err
    assert "Traceback" not in err


def test_full_disk_keeps_finished_records(tiny_suite, tmp_path, capsys, monkeypatch):
    from electra_bench import results

    real = results.append_record
    calls = []

    def append(path, record):
        calls.append(record["run_key"])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, record)

    monkeypatch.setattr(results, "append_record", append)
    tiny_suite.write_text(tiny_suite.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    code = cli.main(["run", str(tiny_suite), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err  # the unit failed with the reason; the suite went on
    lines = (tmp_path / "results" / "e2e" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the first unit's record survived intact
    monkeypatch.setattr(results, "append_record", real)
    assert cli.main(["run", str(tiny_suite), "--no-progress"]) == 0  # space back: only the missing unit runs
    assert len((tmp_path / "results" / "e2e" / "records.jsonl").read_text().splitlines()) == 2


def test_unreachable_tracking_server(tiny_suite, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    code = cli.main(["run", str(tiny_suite), "--no-progress", "--set",
                     "tracking.uri=http://bench:s3cret@127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and "tracking.uri" in err and "cannot open the MLflow tracking store" in err
    assert "s3cret" not in err and "bench:***@127.0.0.1:9" in err
