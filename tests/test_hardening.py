"""Issue #17: the inputs and crash points that slipped through #8's bad-input corpus, one test per class not
covered by a file in tests/bad_inputs/ (those need no code: a case is a file).

- class 1: a suite file over the size limit (generated: 1 MB is not committed);
- class 6: the one masker (redact.py) on passwords with '/' or '@', tokens as user names, query-string tokens;
- class 8: a corrupt records.jsonl line under `plan`, Ctrl-C, `ui --port 70000`, `ui --host 0.0.0.0`.
The crash-point and end-to-end secret tests are in test_resume.py (they share its child processes).
"""
from __future__ import annotations

import pytest
from test_bad_inputs import SUITES, run_cli, sandbox, the_message  # noqa: F401 - sandbox is a fixture

from electra_bench import cli, redact
from electra_bench.tracking import mask_credentials

VALID = SUITES / "parts" / "valid_base.yaml"


def _valid(box):
    return str(box.suites / "parts" / "valid_base.yaml")


def test_suite_file_over_the_size_limit(sandbox, capsys):  # noqa: F811
    big = sandbox.suites / "big.yaml"
    big.write_text("name: big\ndescription: \"" + "x" * 1_000_000 + "\"\n")
    res = run_cli(["validate", str(big), "--data-root", str(sandbox.data)], capsys)
    assert res.code == 2 and "larger than 1,000,000 bytes" in the_message(res.stderr)
    assert sandbox.written() == []


@pytest.mark.parametrize("url, secret", [
    ("postgresql://bob:s3cret@db-host/electra", "s3cret"),
    ("http://alice:pa/ss@w0rd@mlflow-host:5000/api", "pa/ss@w0rd"),  # '/' and '@' in the password
    ("https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/org/repo", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
    ("http://mlflow-host:5000/?token=tok-123456&x=1", "tok-123456"),
    ("s3://bucket/path?X-Amz-Signature=abcdef123456&X-Amz-Credential=AKIAXYZ", "abcdef123456"),
])
def test_masker_hides_every_kind_of_secret(url, secret):
    assert secret not in mask_credentials(url)
    assert secret not in redact.mask(f"error: cannot open {url}: refused")
    assert "***" in redact.mask(url)


def test_remembered_secrets_are_masked_in_any_form():
    redact.remember("http://carol:p%2Fq%40r99@host:5000")
    try:
        text = redact.mask("the server said: user carol, password p/q@r99 (p%2Fq%40r99) rejected")
        assert "p/q@r99" not in text and "p%2Fq%40r99" not in text
    finally:
        redact._known.clear()


def test_urls_without_secrets_are_left_alone():
    for url in ("sqlite:////tmp/work/mlflow.db", "http://127.0.0.1:5000/#/experiments/1", "postgresql://db/x"):
        assert redact.mask(url) == url


def test_plan_with_a_corrupt_records_line(sandbox, capsys):  # noqa: F811
    records = sandbox.root / "results" / "valid-base" / "records.jsonl"
    records.parent.mkdir(parents=True)
    records.write_text('{"not": "closed"\n')
    res = run_cli(["plan", _valid(sandbox), "--data-root", str(sandbox.data)], capsys)
    msg = the_message(res.stderr)
    assert res.code == 2 and f"{records}:1:" in msg and "not a JSON record" in msg
    assert records.read_text() == '{"not": "closed"\n'


def test_ctrl_c_is_one_line(sandbox, capsys, monkeypatch):  # noqa: F811
    def interrupted(suite, args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "plan", interrupted)
    res = run_cli(["plan", _valid(sandbox), "--data-root", str(sandbox.data)], capsys)
    assert res.code == 130 and "Traceback" not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [
        "interrupted: records of finished units are kept; re-run to continue"]


def test_ui_port_out_of_range(sandbox, capsys):  # noqa: F811
    res = run_cli(["ui", _valid(sandbox), "--data-root", str(sandbox.data), "--port", "70000"], capsys)
    assert res.code == 2 and "port 70000 is not in 1-65535" in the_message(res.stderr)


def test_ui_on_all_interfaces_warns_and_keeps_the_uri_out_of_argv(sandbox, capsys, monkeypatch):  # noqa: F811
    import socket
    import subprocess

    with socket.socket() as sock:  # a port free right now
        sock.bind(("0.0.0.0", 0))
        port = str(sock.getsockname()[1])
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv, env: calls.append((argv, env)) or 0)
    uri = "http://alice:pa/ss@w0rd@mlflow-host:5000"
    res = run_cli(["ui", _valid(sandbox), "--data-root", str(sandbox.data), "--host", "0.0.0.0", "--port", port,
                   "--set", f"tracking.uri={uri}"], capsys)
    assert res.code == 0, res.stderr
    assert "warning: --host 0.0.0.0 serves the MLflow tracking API" in res.stderr
    (argv, env), = calls
    assert uri not in " ".join(argv) and env["MLFLOW_BACKEND_STORE_URI"] == uri
    assert "pa/ss@w0rd" not in res.stdout + res.stderr
    redact._known.clear()


HEAVY = ("torch", "transformers", "datasets", "numpy", "scipy", "sklearn", "mlflow", "optuna")


def test_validate_imports_no_heavy_library(sandbox):  # noqa: F811
    """`validate` < 1 s and < 200 MB on any input under 1 MB (class 1; benchmarks/validate_limits.py measures it)
    holds only while it imports none of these: each costs 0.25-3 s and tens of MB before a line is read."""
    import subprocess
    import sys

    code = ("import sys; from electra_bench.cli import main; rc = main(sys.argv[1:]); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "validate", _valid(sandbox), "--data-root", str(sandbox.data)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_node_limit_stops_a_big_flat_list_before_the_schema(sandbox, capsys):  # noqa: F811
    from electra_bench.safe_yaml import MAX_NODES

    many = sandbox.suites / "many.yaml"
    many.write_text("name: many\nseeds: [" + ", ".join(["0"] * MAX_NODES) + "]\n")
    res = run_cli(["validate", str(many), "--data-root", str(sandbox.data)], capsys)
    assert res.code == 2 and f"more than {MAX_NODES:,} nodes" in the_message(res.stderr)
    assert sandbox.written() == []


def test_bf16_on_a_cpu_without_native_bf16_warns_once(monkeypatch, capsys):
    """A suite asking bf16 on an AVX2-only CPU ran ~40x slower than fp32 with no word said (session 4)."""
    import torch

    from electra_bench import units

    monkeypatch.setattr(units, "_SAID", set())
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    for _ in range(2):
        units.warn_emulated_bf16("bf16", "cpu", "pretrain.precision")
    units.warn_emulated_bf16("fp32", "cpu", "finetune.precision")
    units.warn_emulated_bf16("bf16", "cuda", "finetune.precision")
    err = capsys.readouterr().err
    assert err.count("warning: pretrain.precision: bf16 on this CPU") == 1 and "finetune" not in err
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    units.warn_emulated_bf16("bf16", "cpu", "finetune.precision")
    assert capsys.readouterr().err == ""


def test_a_set_rerun_into_other_configs_records_is_refused(tmp_path, capsys):
    """Issue 18.7: `run --set` over a suite's finished records made sibling runs with the same labels, and `table`
    silently showed one config's numbers for the other. Refused (exit 2, nothing run); the plan's own keys pass."""
    import json

    from test_suite_e2e import make_data_root

    from electra_bench.config import load_suite
    from electra_bench.suite import label_clashes, make_plan

    make_data_root(tmp_path / "data")
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: clash\ndata_root: {tmp_path / 'data'}\nwork_dir: {tmp_path / 'work'}\n"
                     f"results_dir: {tmp_path / 'results'}\nbase:\n  tokenizer: {{vocab: vocab/vocab.txt}}\n"
                     "  finetune: {init: random}\ncells: [{label: random init}]\ntasks: [sst2]\nseeds: [0]\n")
    plan = make_plan(load_suite(suite))
    (unit,) = plan.units
    plan.records_path.parent.mkdir(parents=True)
    record = {"run_key": unit.key, "unit": "finetune", "cell": "random init", "label": "random init", "task": "sst2",
              "seed": 0, "suite": "clash", "axes": {}, "metrics": {"accuracy": 50.0}, "flags": [], "code_version": "v",
              "headline_metric": "accuracy", "headline": 50.0, "higher_is_better": True}
    plan.records_path.write_text(json.dumps(record) + "\n")
    assert label_clashes(make_plan(load_suite(suite, ["finetune.lr=0.002"]))) and not label_clashes(plan)
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    code = cli.main(["run", str(suite), "--set", "finetune.lr=0.002", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--set finetune.lr=0.002 changes 1 units whose cell labels already have records" in err
    assert "--results DIR" in err and sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before
