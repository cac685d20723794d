"""Shared pieces of the speed benchmarks: common options, interleaved timing, the machine's matmul peak, machine
facts, and writing a result as `<name>.json` + `<name>.md`.

Why interleave: these machines are shared and noisy (stack-notes). Timing variant A for a minute and then B for a
minute lets a neighbour's burst land on one of them only; alternating A, B, A, B (and rotating who goes first)
spreads the noise over both, so their ratio is far steadier than either absolute speed.
Why measure the peak in the same run: MFU is only meaningful against a peak taken with the same dtype, thread
count and machine load (stack-notes: "Report MFU against a peak measured in the same run").
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from electra_bench.schema import ModelConfig
from electra_bench.units import resolve_device

PRECISIONS = ("fp32", "tf32", "bf16")  # fp32: full-precision matmuls; tf32: CUDA TensorFloat-32; bf16: autocast
DTYPE_OF = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
# --quick: a 2-layer, 32-wide encoder (generator at 1/4: 8 wide, 1 head), small enough for a unit test.
QUICK_MODEL = dict(size="tiny", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, embedding_size=16)


def parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every benchmark has (--quick, --device, --threads, --out); the script adds its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--out", default="results/benchmarks", help="folder for <benchmark>.json and <benchmark>.md")
    return ap


def start(ap: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, str, ModelConfig]:
    """Parse argv and apply --threads; return the options, the device and the model: ELECTRA-Small (Table 6), or
    the tiny one for --quick."""
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, resolve_device(args.device), ModelConfig(**QUICK_MODEL) if args.quick else ModelConfig(size="small")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bf16_supported(device: str) -> bool:
    """Native bf16 matmuls: CUDA (Ampere+), or oneDNN on a CPU with avx512_bf16/AMX. Emulated bf16 is slower
    than fp32, so a variant that would only measure emulation is skipped."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precisions_for(device: str) -> list[str]:
    """The precisions worth measuring on this device (tf32 exists only on CUDA)."""
    out = ["fp32"] + (["tf32"] if device == "cuda" else [])
    return out + (["bf16"] if bf16_supported(device) else [])


@contextlib.contextmanager
def matmul_precision(mode: str) -> Iterator[None]:
    """fp32 matmuls as `mode` says, for a whole step (backward included). fp32 pins "highest" explicitly, so a
    TF32 (or oneDNN bf16x3) default can never make an "fp32" number faster than it is."""
    if mode not in PRECISIONS:
        raise ValueError(f"unknown precision '{mode}'; known: {', '.join(PRECISIONS)}")
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def autocast(device: str, mode: str) -> torch.autocast:
    """bf16 autocast for the forward pass in mode "bf16" (backward follows the forward's dtypes by itself)."""
    return torch.autocast(device, dtype=torch.bfloat16, enabled=mode == "bf16")


def interleaved(fns: dict[str, Callable[[int], object]], reps: int, device: str) -> dict[str, list[float]]:
    """Seconds of `fn(i)` for i in range(reps), for every fn, alternating between them; the order rotates each
    repetition so no variant always runs right after another one (caches, turbo, a neighbour's burst)."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(reps):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            sync(device)
            t0 = time.perf_counter()
            fns[name](i)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def matmul_peak_gflops(mode: str, device: str, n: int, reps: int) -> float:
    """Best-of-`reps` GFLOP/s of an n x n @ n x n matmul (2n^3 FLOPs) in `mode`, on the current thread count.

    Best-of, not mean: the peak is what the hardware can do; noise only ever makes a repetition slower."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen, dtype=DTYPE_OF[mode])
    b = torch.randn(n, n, device=device, generator=gen, dtype=DTYPE_OF[mode])
    best = float("inf")
    with matmul_precision(mode):  # bf16 inputs are bf16 already: no autocast
        a @ b  # warm-up: first call allocates and picks kernels
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def machine_info(device: str) -> dict:
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_model(), "device": device, "python": platform.python_version(), "commit": git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def command(script: str, argv: list[str]) -> str:
    """The command line that reproduces this run (argv as given, whether from a shell or from a test)."""
    return shlex.join(["python", script, *argv])


def md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def machine_lines(info: dict, cmd: str) -> list[str]:
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return [f"Machine: {info['cpu']}{gpu}; device {info['device']}, threads {info['threads']}; torch {info['torch']}, "
            f"transformers {info['transformers']}; commit {info['commit']}; {info['date']}.", "",
            f"Command: `{cmd}`"]


def write_report(out_dir: str | Path, name: str, record: dict, md_lines: list[str]) -> Path:
    """Write `<out_dir>/<name>.json` (the record) and `<name>.md` (the lines); returns the json path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / f"{name}.md").write_text("\n".join(md_lines) + "\n")
    return out / f"{name}.json"
