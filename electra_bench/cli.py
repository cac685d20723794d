"""electra-bench: the command line. The only module that reads argv.

User errors (a bad suite, override, data file or argument) print one line naming file, line and field, and exit
with status 2 without running or writing anything. A suite whose units partly failed exits with status 1.

Every command imports what it runs inside its own function (deferred), so each loads only what it uses: `validate`
and a fully cached `run` never load torch (tests/test_layers.py exempts this module from marking each such import).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EPILOG = """examples:
  electra-bench validate suites/quickstart.yaml
  electra-bench plan suites/quickstart.yaml --set pretrain.steps=200
  electra-bench run suites/quickstart.yaml            # resumable: re-run to continue after a kill
  electra-bench table suites/quickstart.yaml          # re-render tables/plots from results/ alone
  electra-bench ui suites/quickstart.yaml             # MLflow UI on 127.0.0.1 over the suite's store
  electra-bench worker suites/quickstart.yaml --storage postgresql://host/db --tracking-uri http://host:5000
"""


REFERENCE_HELP = ("committed results to show beside yours, read-only: a results root (results) or one suite's "
                  "folder (results/quickstart); writes reference.md beside your table")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="electra-bench", description="ELECTRA pre-training ablations: pretrain, "
                                "fine-tune, track in MLflow and render the paper's tables.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def suite_cmd(name: str, help_: str, example: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("suite", help="suite YAML file")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="override a field by dotted path, e.g. pretrain.disc_weight=10 (repeatable)")
        sp.add_argument("--scale", help="one of the suite's `scales` (default: the first listed), e.g. cpu, paper")
        sp.add_argument("--data-root", help="data folder (default: $ELECTRA_BENCH_DATA, ./data, ../shared/data)")
        sp.add_argument("--results", metavar="DIR", help="results root of your runs: records and tables go to "
                        "DIR/<suite>/ (default: the suite's results_dir; `make quickstart` uses the git-ignored runs/)")
        return sp

    suite_cmd("validate", "check a suite (schema, tasks, data paths) without running anything",
              "electra-bench validate suites/quickstart.yaml")
    suite_cmd("plan", "show the expanded units with their status (done / pending) and estimated cost",
              "electra-bench plan suites/paper/table1_small.yaml")
    r = suite_cmd("run", "run every pending unit; finished units are skipped, interrupted ones resume",
                  "electra-bench run suites/quickstart.yaml")
    r.add_argument("--no-progress", action="store_true", help="plain log lines instead of progress bars")
    r.add_argument("--reference", metavar="DIR", help=REFERENCE_HELP)
    se = suite_cmd("search", "run or resume the suite's Optuna study (`search:` block); a finished study only reports",
                   "electra-bench search suites/search/rte_lr.yaml --n-trials 20")
    se.add_argument("--n-trials", type=int, help="total trials wanted (default: search.n_trials)")
    se.add_argument("--no-progress", action="store_true", help="plain log lines instead of progress bars")
    w = suite_cmd("worker", "claim and run units of a suite (or trials of its search study) together with other "
                  "workers, on this host or others, through a shared Optuna storage; re-run to resume",
                  "electra-bench worker suites/quickstart.yaml --storage postgresql://user@db-host/electra "
                  "--tracking-uri http://mlflow-host:5000")
    w.add_argument("--storage", help="Optuna storage shared by the workers: an RDB URL (postgresql://...) for many "
                   "hosts, or a journal file path for one host (default: search.storage, else "
                   "<work_dir>/<suite>/optuna.journal)")
    w.add_argument("--tracking-uri", help="MLflow tracking URI shared by the workers, e.g. an `mlflow server` URL "
                   "(default: tracking.uri, else the embedded SQLite store under the work dir)")
    w.add_argument("--collect", action="store_true", help="run nothing: append the records of every unit any worker "
                   "finished to results/<suite>/records.jsonl (hosts without a shared results dir) and render tables")
    w.add_argument("--heartbeat", type=int, default=10, metavar="S", help="seconds between a worker's heartbeats "
                   "while it holds a unit (default 10)")
    w.add_argument("--grace", type=int, default=60, metavar="S", help="seconds without a heartbeat after which a "
                   "unit is re-queued for another worker (default 60)")
    w.add_argument("--poll", type=float, default=2.0, metavar="S", help="seconds between looks at the queue while "
                   "units run elsewhere (default 2)")
    w.add_argument("--n-trials", type=int, help="search suites: total trials wanted (default: search.n_trials)")
    w.add_argument("--no-progress", action="store_true", help="plain log lines instead of progress bars")
    t = suite_cmd("table", "re-render tables, plots and verdicts from the suite's records alone",
                  "electra-bench table suites/quickstart.yaml --results runs --reference results")
    t.add_argument("--reference", metavar="DIR", help=REFERENCE_HELP)
    ls = sub.add_parser("ls", help="list the suites under a folder with their progress (units done / total)",
                        description="list the suites under a folder with their progress (units done / total)",
                        epilog="example:\n  electra-bench ls suites/paper",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("folder", nargs="?", default="suites")
    ls.add_argument("--data-root", help="data folder (default: $ELECTRA_BENCH_DATA, ./data, ../shared/data)")
    cl = sub.add_parser("claims", help="the claims of several suites and their verdicts, as one markdown table",
                        description="the claims of several suites and their verdicts (from committed records alone), "
                        "as the markdown table the README's 'Reproducing the paper' section shows",
                        epilog="example:\n  electra-bench claims suites/paper/*.yaml suites/robustness.yaml",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    cl.add_argument("suites", nargs="+", help="suite YAML files")
    c = suite_cmd("compare", "two or more cells side by side: config differences and metric deltas (medians)",
                  "electra-bench compare suites/quickstart.yaml ELECTRA 'random init'")
    c.add_argument("cells", nargs="*", help="cell labels (default: all cells of the suite)")
    u = suite_cmd("ui", "start the MLflow UI over the suite's tracking store (127.0.0.1 unless --host)",
                  "electra-bench ui suites/quickstart.yaml --port 5000")
    u.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only)")
    u.add_argument("--port", type=_port, default=5000, help="TCP port, 1-65535 (default 5000)")
    return p


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 1-65535")
    return port


def main(argv: list[str] | None = None) -> int:
    """Every line the harness prints goes through the one masker (redact.py): no credential of a configured URL
    reaches the terminal, whichever library prints it."""
    from .redact import MaskingStream, remember

    args = _parser().parse_args(argv)
    remember(getattr(args, "storage", None), getattr(args, "tracking_uri", None))
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = MaskingStream(out), MaskingStream(err)
    try:
        return _main(args)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(args) -> int:
    if not os.environ.get("ELECTRA_BENCH_ONLINE"):  # hub retries cost ~23 s before failing offline (stack-notes)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    _quiet_libraries()
    from .config import ConfigError, load_suite
    from .redact import remember
    from .results import RecordError
    from .tasks import DataError

    try:
        if args.command in ("ls", "claims"):
            return cmd_ls(args) if args.command == "ls" else cmd_claims(args)
        if getattr(args, "results", None):  # a suite-level field: it changes no run key
            args.overrides.append(f"results_dir={json.dumps(args.results)}")
        suite = load_suite(args.suite, args.overrides, args.scale)
        remember(suite.config.tracking.uri, suite.config.search.storage if suite.config.search else None)
        return COMMANDS[args.command](suite, args)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RecordError as e:  # a records file edited by hand or damaged: name its line, touch nothing
        print(f"error: {e} (fix or delete that line; the other records are kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: records of finished units are kept; re-run to continue", file=sys.stderr)
        return 130
    except OSError as e:  # unwritable folder, full disk: nothing finished is lost (records are appended atomically)
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write or read{where}: {e.strerror or e} — records of finished units are kept; fix "
              f"this and re-run to continue", file=sys.stderr)
        return 2


def _quiet_libraries() -> None:
    """Our own progress bars are the progress; silence library bars and expected load reports.

    By environment (read when each library is first imported), not by importing them here: `datasets` and
    `transformers` cost ~3 s and ~100 MB to import, and `validate` / `plan` need neither
    (benchmarks/validate_limits.py).
    A value the user set wins."""
    import logging
    import warnings

    for var, value in (("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(var, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _plan(suite, args):
    from .suite import make_plan

    plan = make_plan(suite, Path(args.data_root) if args.data_root else None)
    if not plan.data_root.is_dir():
        from .config import ConfigError

        file, line, field = "--data-root", None, None
        if not args.data_root and suite.config.data_root:
            (file, line), field = suite.source.where(("data_root",)), "data_root"
        raise ConfigError(f"data root {plan.data_root} does not exist (set data_root, --data-root or "
                          f"$ELECTRA_BENCH_DATA)", file, line, field)
    return plan


def cmd_validate(suite, args) -> int:
    plan = _plan(suite, args)
    from .config import ConfigError
    from .corpus import source_files
    from .tasks import DataError

    for cell in suite.cells:
        if cell.config.finetune.init == "pretrained":
            for j, pattern in enumerate(cell.config.corpus.sources):
                try:
                    source_files(plan.data_root, [pattern])
                except DataError as e:
                    file, line = suite.source.where(("base", "corpus", "sources", j))
                    raise ConfigError(str(e), file, line, f"base.corpus.sources[{j}]") from None
            tok = cell.config.tokenizer
            vocab = Path(tok.vocab) if Path(tok.vocab).is_absolute() else plan.data_root / tok.vocab
            if tok.train_vocab_size is None and not vocab.is_file():
                file, line = suite.source.where(("base", "tokenizer", "vocab"))
                raise ConfigError(f"vocab file {vocab} not found", file, line, "base.tokenizer.vocab")
    custom = [d.get("name") for d in suite.config.custom_tasks]
    for k, task in enumerate(suite.config.tasks):
        spec = suite.tasks[task]
        for split in ("train", *spec.dev_splits[:1]):
            path = spec.file_path(split, plan.data_root)
            if not path.is_file() and spec.hub is None:
                at, field = (("custom_tasks", custom.index(task)), f"custom_tasks.{custom.index(task)}") \
                    if task in custom else (("tasks", k), f"tasks[{k}]")
                raise ConfigError(f"task '{task}': {path} not found", *suite.source.where(at), field)
    print(f"{suite.path}: valid — {len(suite.cells)} cells, {len(plan.units)} units")
    return 0


def cmd_plan(suite, args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .eta import duration, estimates, total
    from .flops import BERT_VOCAB
    from .suite import pretrain_seed_of
    from .units import flops_per_step, planned_steps

    plan = _plan(suite, args)
    seconds = estimates(plan)
    table = Table(title=f"{suite.config.name}: {len(plan.units)} units")
    for col in ("status", "unit", "cell", "pretrain seed", "task", "seed", "key", "train FLOPs", "est. time"):
        table.add_column(col)
    for u in plan.units:
        fl = ""
        if u.kind == "pretrain":
            vocab = u.cell.config.tokenizer.train_vocab_size or BERT_VOCAB
            steps = planned_steps(u.cell.config, vocab)
            fl = f"{flops_per_step(u.cell.config, vocab) * steps:.2e} ({steps} steps)"
        pseed = pretrain_seed_of(u.cell)
        table.add_row(u.status, u.kind, u.cell.label, "" if pseed is None else str(pseed), u.task or "",
                      "" if u.seed is None else str(u.seed),
                      u.key[:12], fl, duration(seconds[u.key]) if u.key in seconds else "")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    counts = {s: sum(u.status == s for u in plan.units) for s in ("done", "pending", "failed", "blocked")}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "blocked")
                  + (" — a run is in progress" if _is_running(plan) else ""))
    for u in plan.units:
        if u.status == "failed":
            console.print(f"failed: {u.kind} {u.cell.run_label} {u.task or ''} {'' if u.seed is None else u.seed}: "
                          f"{u.reason}")
    todo = total(plan, seconds)
    if todo.units:
        left = f"; {todo.unestimated} of them without an estimate (not counted)" if todo.unestimated else ""
        console.print(f"to run: {todo.units} units, ETA {duration(todo.seconds)}{left}")
    if seconds:
        console.print(f"time estimates from earlier records on this kind of machine: pre-training by the FLOP/s of "
                      f"the pre-training records under {suite.config.results_dir}/ (includes corpus preparation), "
                      f"fine-tuning by the FLOP/s of this suite's finished fine-tunes of the same task")
    return 0


def cmd_run(suite, args) -> int:
    from .runner import run_plan

    plan = _plan(suite, args)
    _refuse_label_clashes(plan, args)
    reference = _load_reference(plan, args.reference)
    bad = run_plan(plan, show_progress=not args.no_progress)
    print(f"\nrecords: {plan.records_path}")
    if (plan.records_path.parent / "table.md").exists():
        _print_table(plan)
    _show_reference(plan, reference)
    uri = suite.config.tracking.uri or f"sqlite:///{(plan.work_dir / 'mlflow.db').resolve()}"
    from .tracking import mask_credentials

    print(f"MLflow UI: electra-bench ui {suite.path}   (or: mlflow ui --backend-store-uri {mask_credentials(uri)})")
    return _report_bad(bad)


def _refuse_label_clashes(plan, args) -> None:
    """A `--set` re-run into the records of the suite's own config would file another config's numbers under the
    same cell labels (`table` keeps the newer per seed): refused, nothing written."""
    given = [o for o in args.overrides if not o.startswith("results_dir=")]
    if not given:
        return
    from .config import ConfigError
    from .suite import label_clashes

    if clash := label_clashes(plan):
        first = ", ".join(f"{u.cell.label}{' ' + u.task if u.task else ''}{'' if u.seed is None else f' seed {u.seed}'}"
                          for u in clash[:3])
        raise ConfigError(f"{' '.join('--set ' + o for o in given)} changes {len(clash)} units whose cell labels "
                          f"already have records of another config in {plan.records_path} ({first}"
                          f"{', ...' if len(clash) > 3 else ''}): put these runs apart with --results DIR, or give "
                          f"the change its own cell label in the suite", "--set", None, None)


def _report_bad(bad) -> int:
    """Failed and blocked units with their reasons; the exit status (1 if any)."""
    for u in bad:
        print(f"{u.status.upper()}: {u.kind} {u.cell.label} {u.task or ''} {u.seed if u.seed is not None else ''}"
              f" — {u.reason}", file=sys.stderr)
    return 1 if bad else 0


def cmd_table(suite, args) -> int:
    from .runner import render

    plan = _plan(suite, args)
    reference = _load_reference(plan, args.reference)
    paths = render(plan)
    if not paths:
        print(f"no records yet in {plan.records_path}", file=sys.stderr)
        return 1
    _print_table(plan)
    _show_reference(plan, reference)
    return 0


def _print_table(plan) -> None:
    """table.md, and where the headline figure (every seed of every cell) is."""
    from .headline_plot import FILE

    folder = plan.records_path.parent
    print((folder / "table.md").read_text())
    if (folder / FILE).exists():
        print(f"headline figure (each seed and the median, per cell and task): {folder / FILE}")


def _load_reference(plan, reference: str | None):
    """The committed records of `--reference` (path, records), read-only; refused when they are your own results."""
    if not reference:
        return None
    from .compare import reference_records
    from .config import ConfigError

    path, ref = reference_records(Path(reference), plan.suite.config.name)
    if path.resolve() == plan.records_path.resolve():
        raise ConfigError(f"--reference {reference} is your own results ({plan.records_path}); write your runs "
                          f"elsewhere with --results DIR", "--reference")
    return path, ref


def _show_reference(plan, loaded) -> None:
    """Your records beside committed ones (`--reference`): printed and written to reference.md beside your table."""
    if loaded is None:
        return
    from .compare import beside_reference
    from .results import read_records

    path, ref = loaded
    yours = read_records(plan.records_path) if plan.records_path.exists() else []
    text = beside_reference(yours, ref, str(plan.records_path.parent), str(path.parent))
    out = plan.records_path.parent / "reference.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"\nyour runs beside the reference (headline medians over seeds; {out}):\n{text}")


def cmd_claims(args) -> int:
    from .verdicts import claim_rows, markdown

    print(markdown(claim_rows([Path(p) for p in args.suites], Path.cwd())), end="")
    return 0


def cmd_ls(args) -> int:
    from .config import ConfigError, load_suite
    from .suite import make_plan

    files = sorted(p for p in Path(args.folder).rglob("*.y*ml") if not p.name.startswith("_"))
    for path in files:
        try:
            plan = make_plan(load_suite(path), Path(args.data_root) if args.data_root else None)
        except ConfigError as e:
            print(f"{str(path):45s} INVALID  {e}")
            continue
        done = sum(u.status == "done" for u in plan.units)
        failed = sum(u.status == "failed" for u in plan.units)
        running = " running" if _is_running(plan) else ""
        print(f"{str(path):45s} {plan.suite.config.name:32s} {done:4d}/{len(plan.units):<4d} done"
              f"{f', {failed} failed' if failed else ''}{running}")
    return 0


def _is_running(plan) -> bool:
    """A `run` of this suite holds its lock file right now."""
    import fcntl

    lock = plan.work_dir / "run.lock"
    if not lock.exists():
        return False
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def cmd_compare(suite, args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .compare import compare_cells, disagreements

    plan = _plan(suite, args)
    diffs, deltas = compare_cells(plan, args.cells or [c.label for c in suite.cells])
    console = Console(width=None if sys.stdout.isatty() else 160)
    labels = args.cells or [c.label for c in suite.cells]
    t = Table(title="config differences (dotted path)")
    for col in ["path", *labels]:
        t.add_column(col)
    for path, values in diffs.items():
        t.add_row(path, *[str(values[c]) for c in labels])
    console.print(t)
    console.print(deltas.to_string())
    rows = disagreements(plan, labels[0], labels[1]) if len(labels) == 2 else []
    if rows:  # per-example dev predictions beside the records: where the two cells disagree
        d = Table(title=f"dev examples where {labels[0]} and {labels[1]} disagree (same task and seed)")
        for col in rows[0]:
            d.add_column(col)
        for row in rows:
            d.add_row(*[str(v) for v in row.values()])
        console.print(d)
    return 0


def cmd_search(suite, args) -> int:
    from .search import run_search

    plan = _plan(suite, args)
    study = run_search(plan, args.n_trials, show_progress=not args.no_progress)
    return _report_study(suite, plan, study)


def _report_study(suite, plan, study) -> int:
    states = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    print(f"study {study.study_name}: " + ", ".join(f"{n} {s.lower()}" for s, n in states.items()))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        print(f"best trial {best.number}: {suite.config.search.objective} = {best.value:.4f} with {best.params}")
        print(f"suite snippet: {plan.records_path.parent / 'best.yaml'} (use it with `extends:`)")
    return 0 if complete else 1


def cmd_worker(suite, args) -> int:

    from .config import load_suite
    from .leases import LeaseTimes

    if args.tracking_uri:  # a suite-level field: it changes no run key
        suite = load_suite(args.suite, [*args.overrides, f"tracking.uri={json.dumps(args.tracking_uri)}"], args.scale)
    plan = _plan(suite, args)
    if args.collect:
        from .runner import render
        from .worker import collect

        added = collect(plan, storage_url=args.storage)
        render(plan)
        print(f"{added} records added to {plan.records_path}")
        return 0
    times = LeaseTimes(heartbeat_s=args.heartbeat, grace_s=args.grace)
    if suite.config.search is not None:
        from .worker import run_search_worker

        study = run_search_worker(plan, args.storage, times, args.n_trials, not args.no_progress)
        return _report_study(suite, plan, study)
    from .worker import run_worker

    bad = run_worker(plan, args.storage, times, args.poll, not args.no_progress)
    print(f"\nrecords: {plan.records_path}")
    return _report_bad(bad)


def cmd_ui(suite, args) -> int:
    import subprocess

    plan = _plan(suite, args)
    uri = suite.config.tracking.uri or f"sqlite:///{(plan.work_dir / 'mlflow.db').resolve()}"
    from .tracking import mask_credentials

    _check_bindable(args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} serves the MLflow tracking API (read and write, no authentication) to "
              f"every host that can reach this one", file=sys.stderr)
    print(f"MLflow UI on http://{args.host}:{args.port} (store {mask_credentials(uri)}); Ctrl-C stops it")
    # The store URI (it may hold a password) goes by environment, not argv: `ps` shows argv to every user.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": uri}
    return subprocess.call([sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port),
                            "--workers", "1"], env=env)


def _check_bindable(host: str, port: int) -> None:
    """A port in use or a host that is not ours: one line now, not a uvicorn traceback after the server starts."""
    import socket

    from .config import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})", "--port") from None


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run, "table": cmd_table, "ui": cmd_ui,
            "compare": cmd_compare, "search": cmd_search, "worker": cmd_worker}

if __name__ == "__main__":
    sys.exit(main())
