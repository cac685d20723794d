"""Malformed input (issue #8): a bad suite, override, CLI argument or data file must fail with exit status 2 and ONE
stderr message that names the file, the line (where there is one) and the dotted field (where there is one), with
no traceback, and without writing records (results_dir) or an MLflow store (work_dir).

The cases are files, so adding a case means adding a file:
- tests/bad_inputs/suites/NN_description.yaml: run as `electra-bench validate <suite> --data-root <fake root>`
  in-process through `cli.main`;
- tests/bad_inputs/data/NN_description/case.yaml plus the small hand-written data file it names, read with
  `tasks.load_split` (a task defined by `task_from_dict`) or `corpus.iter_documents`. These raise DataError, which
  `cli.main` turns into `error: <message>` and status 2.

Every case file starts with the header line `# expect: <substring>; line: <n or ->; path: <dotted or ->`. Further
leading comment lines may add:
  # file: <name>       the file the message names when it is not the case itself (a parent suite; `--set`)
  # args: <argv>       more arguments after the suite (shell-quoted), e.g. `--set pretrain.lr`
  # command: <cmd>     the subcommand (default: validate)
  # data_root: suite   do not pass --data-root: the suite's own data_root applies
  # xfail: <reason>    the current code does not meet the bar yet (a strict xfail: fixing it fails the test)
`@TMP@` in a suite is replaced by the test's tmp_path, so work_dir/results_dir land where the test checks them.
Files under tests/bad_inputs/suites/parts/ are not cases: they are parents that the cases extend.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from electra_bench import cli
from electra_bench.corpus import iter_documents
from electra_bench.tasks import TASKS, DataError, load_split, task_from_dict

HERE = Path(__file__).resolve().parent
SUITES = HERE / "bad_inputs" / "suites"
DATA = HERE / "bad_inputs" / "data"
TMP = "@TMP@"
HEADER_KEYS = ("expect", "line", "path", "file", "args", "command", "data_root", "xfail")
_SPLIT = re.compile(r";\s*(?=(?:" + "|".join(HEADER_KEYS) + r"):)")


def read_header(path: Path) -> dict[str, str]:
    """The `key: value` pairs of the file's leading comment lines (only HEADER_KEYS; other comments are prose)."""
    out: dict[str, str] = {}
    for raw in path.read_bytes().splitlines():
        text = raw.decode("utf-8", "replace")
        if not text.startswith("#"):
            break
        for part in _SPLIT.split(text[1:].strip()):
            key, sep, value = part.partition(":")
            if sep and key.strip() in HEADER_KEYS:
                out[key.strip()] = value.strip()
    assert "expect" in out and "line" in out and "path" in out, f"{path}: header needs expect, line and path"
    return out


def _opt(value: str | None) -> str | None:
    return None if value in (None, "", "-") else value


def _params(paths: list[Path]) -> list:
    params = []
    for path in paths:
        header = read_header(path)
        marks = [pytest.mark.xfail(strict=True, reason=header["xfail"])] if "xfail" in header else []
        params.append(pytest.param(path, header, id=path.parent.name if path.name == "case.yaml" else path.stem,
                                   marks=marks))
    return params


SUITE_CASES = sorted(SUITES.glob("[0-9][0-9]_*.yaml"))
DATA_CASES = sorted(DATA.glob("[0-9][0-9]_*/case.yaml"))


@dataclass
class Outcome:
    code: int | str | None
    stdout: str
    stderr: str


@dataclass
class Sandbox:
    root: Path  # tmp_path
    suites: Path  # copies of the suites a test uses (parts/ and its case), with @TMP@ replaced
    data: Path  # a tiny fake data root
    cwd: Path  # the working directory during the call: must stay empty

    def place(self, suite: Path) -> Path:
        """Copy a suite file (keeping its path under tests/bad_inputs/suites) with @TMP@ replaced; the copy's path."""
        copy = self.suites / suite.relative_to(SUITES)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(suite.read_bytes().replace(TMP.encode(), self.root.as_posix().encode()))
        return copy

    def written(self) -> list[str]:
        """Everything the call left behind: work/results dirs, files in the cwd or next to the sandbox folders."""
        extra = sorted(p.name for p in self.root.iterdir() if p.name not in {"suites", "data", "cwd"})
        return extra + sorted(f"cwd/{p.name}" for p in self.cwd.iterdir())


def _fake_data_root(root: Path) -> Path:
    """Tiny made-up files where a valid suite (parts/valid_base.yaml) looks: never real data."""
    files = {
        "glue/SST-2/train.tsv": "sentence\tlabel\na fine film\t1\n",
        "glue/SST-2/dev.tsv": "sentence\tlabel\na dull film\t0\n",
        "custom/x/train.tsv": "sentence\tlabel\nyes\t1\n",
        "custom/x/dev.tsv": "sentence\tlabel\nno\t0\n",
        "custom/y/dev.tsv": "sentence\tlabel\nno\t0\n",
        "corpus/tiny/a.txt": "A first paragraph.\nA second one.\n\nAnother document.\n",
        "vocab/vocab.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nfilm\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Sandbox:
    box = Sandbox(tmp_path, tmp_path / "suites", _fake_data_root(tmp_path / "data"), tmp_path / "cwd")
    for part in sorted((SUITES / "parts").glob("*.yaml")):  # the parents cases extend (few files: fast cleanup)
        box.place(part)
    box.cwd.mkdir()
    monkeypatch.chdir(box.cwd)  # relative defaults (work/, results/, mlflow.db) would land here
    monkeypatch.delenv("ELECTRA_BENCH_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cli.main sets these with setdefault; keep them test-local
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return box


@pytest.fixture(autouse=True)
def _task_registry_untouched():
    """Loading and planning resolve a suite's custom tasks into the suite (config.Suite.tasks), never into the global
    TASKS registry: every case, custom tasks included, leaves it as it was."""
    before = {name: TASKS.get(name) for name in TASKS.names()}
    yield
    assert {name: TASKS.get(name) for name in TASKS.names()} == before


def run_cli(argv: list[str], capsys) -> Outcome:
    """cli.main in-process; an exception escaping it is what the command line would print as a traceback."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    except BaseException as e:  # noqa: BLE001 - reported as the traceback the user would see
        out, err = capsys.readouterr()
        return Outcome(None, out, err + "".join(traceback.format_exception(e)))
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


def the_message(stderr: str) -> str:
    """The one error line of stderr; argparse's usage lines before it are allowed, nothing else."""
    assert "Traceback" not in stderr, f"traceback instead of a message:\n{stderr[-3000:]}"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    messages = [ln for ln in lines if not ln.startswith(("usage:", " "))]
    assert len(messages) == 1, f"expected one message on stderr, got {len(messages)}:\n{stderr}"
    assert messages[0].startswith("error:") or ": error:" in messages[0], messages[0]
    return messages[0]


def assert_names(msg: str, expect: str, file: str | None, line: str | None, path: str | None) -> None:
    assert expect in msg, f"expected {expect!r} in: {msg}"
    if file:
        assert file in msg, f"the message does not name the file {file!r}: {msg}"
    if line:
        assert f"{file}:{line}:" in msg, f"the message does not name line {line} of {file}: {msg}"
    if path:
        assert path in msg, f"the message does not name the field {path!r}: {msg}"


# --- malformed suites and overrides ----------------------------------------------------------------------------

@pytest.mark.parametrize("case, header", _params(SUITE_CASES))
def test_bad_suite(case, header, sandbox, capsys):
    suite = sandbox.place(case)
    argv = [header.get("command", "validate"), str(suite)]
    argv += shlex.split(header.get("args", "").replace(TMP, sandbox.root.as_posix()))
    if header.get("data_root") != "suite":
        argv += ["--data-root", str(sandbox.data)]
    res = run_cli(argv, capsys)
    msg = the_message(res.stderr)
    assert res.code == 2, f"exit status {res.code}, not 2: {msg}"
    assert_names(msg, header["expect"], header.get("file", case.name), _opt(header["line"]), _opt(header["path"]))
    assert sandbox.written() == [], f"{case.name} wrote {sandbox.written()}"


def test_valid_base_suite_validates(sandbox, capsys):
    """Control: the parent the data-root cases extend is valid against the fake data root, and validate writes
    nothing, so those cases fail for their own reason."""
    res = run_cli(["validate", str(sandbox.suites / "parts" / "valid_base.yaml"), "--data-root", str(sandbox.data)],
                  capsys)
    assert (res.code, res.stderr) == (0, ""), res.stderr
    assert "valid" in res.stdout
    assert sandbox.written() == []


# --- CLI arguments ---------------------------------------------------------------------------------------------

VALID = "@TMP@/suites/parts/valid_base.yaml"  # validates against the fake data root (test_valid_base_...)
ROOT = ["--data-root", "@TMP@/data"]
CLI_CASES = [
    # id, argv, expect, file named in the message
    ("unknown_subcommand", ["frobnicate", VALID, *ROOT], "invalid choice: 'frobnicate'", None),
    ("no_arguments", [], "the following arguments are required: COMMAND", None),
    ("missing_suite_argument", ["validate"], "the following arguments are required: suite", None),
    ("unknown_option", ["validate", VALID, *ROOT, "--sett", "pretrain.lr=1"], "unrecognized arguments: --sett",
     None),
    ("set_without_value", ["validate", VALID, *ROOT, "--set"], "argument --set: expected one argument", None),
    ("port_not_a_number", ["ui", VALID, *ROOT, "--port", "http"], "invalid int value: 'http'", None),
    ("nonexistent_suite_file", ["validate", "@TMP@/suites/no_such_suite.yaml", *ROOT], "file not found",
     "no_such_suite.yaml"),
    ("data_root_missing", ["validate", VALID, "--data-root", "@TMP@/no-such-data"], "does not exist",
     "no-such-data"),
    ("suite_is_a_directory", ["validate", "@TMP@/suites", *ROOT], "directory", "suites"),
]


@pytest.mark.parametrize("name, argv, expect, file", CLI_CASES, ids=[
    c.values[0] if hasattr(c, "values") else c[0] for c in CLI_CASES])
def test_bad_cli_arguments(name, argv, expect, file, sandbox, capsys):
    argv = [a.replace(TMP, sandbox.root.as_posix()) for a in argv]
    res = run_cli(argv, capsys)
    msg = the_message(res.stderr)
    assert res.code == 2, f"exit status {res.code}, not 2: {msg}"
    assert_names(msg, expect, file, None, None)
    assert sandbox.written() == []


def test_entry_point_prints_one_line(sandbox):
    """The installed command, as a user runs it: status 2 and exactly one stderr line, nothing from the libraries
    it imports (warnings, progress bars) and no traceback. The only subprocess test (imports cost seconds)."""
    exe = Path(sys.executable).with_name("electra-bench")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "electra_bench.cli"]
    suite = sandbox.place(SUITES / "07_unknown_key_top.yaml")
    env = {k: v for k, v in os.environ.items() if k != "ELECTRA_BENCH_DATA"}
    proc = subprocess.run([*cmd, "validate", str(suite), "--data-root", str(sandbox.data)], cwd=sandbox.cwd,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    header = read_header(SUITES / "07_unknown_key_top.yaml")
    assert proc.stderr.startswith(f"error: {suite}:{header['line']}: {header['path']}: "), proc.stderr
    assert header["expect"] in proc.stderr, proc.stderr
    assert sandbox.written() == []


# --- malformed data files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, header", _params(DATA_CASES))
def test_bad_data_file(case, header, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = yaml.safe_load(case.read_text(encoding="utf-8"))
    folder = case.parent
    if spec["loader"] == "task":
        task = task_from_dict(spec["task"])
        data_file = task.file_path(spec["split"], folder)

        def load():
            return load_split(task, spec["split"], folder, cache_dir=tmp_path / "hf-cache")
    else:
        files = [folder / f for f in spec["files"]]
        data_file = files[0]

        def load():
            return list(iter_documents(files))
    try:
        load()
    except DataError as e:  # cli.main prints `error: <message>` and returns 2
        msg = str(e)
    except Exception as e:  # noqa: BLE001 - anything else is a traceback from the command line
        pytest.fail(f"{type(e).__name__} instead of DataError (a traceback for the user):\n"
                    f"{''.join(traceback.format_exception(e))[-3000:]}")
    else:
        pytest.fail(f"{data_file.name} was read without an error")
    assert "\n" not in msg, f"the message is not one line: {msg!r}"
    assert str(data_file.resolve()) in msg or str(data_file) in msg, f"the message does not name {data_file}: {msg}"
    assert_names(msg, header["expect"], data_file.name, _opt(header["line"]), _opt(header["path"]))


def test_corpus_has_enough_cases():
    """Issue #8 asks for at least 30 malformed inputs; every case file has a parseable header (checked above)."""
    assert len(SUITE_CASES) + len(DATA_CASES) + len(CLI_CASES) >= 30
    assert len({p.name[:2] for p in SUITE_CASES}) == len(SUITE_CASES), "two suite cases share a number"
    assert len({p.parent.name[:2] for p in DATA_CASES}) == len(DATA_CASES), "two data cases share a number"
