"""Pre-training text -> packed token blocks, built once per (corpus, tokenizer, length) and cached as Arrow.

Input files are `.txt` or `.txt.gz`, one paragraph per line, documents separated by blank lines (the
create_pretraining_data format; data README §3c-3e). Packing follows GR build_pretraining_dataset.py
(electra-reference §7.1): lines of a document are packed up to the target length, blocks never cross a document,
10% of blocks are one segment and the rest are split A/B at a line boundary, and 5% get a random shorter target.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .tasks.base import DataError

if TYPE_CHECKING:  # annotations only: the import is deferred to the functions that compute
    import numpy as np


@dataclass
class Blocks:
    """Packed pre-training blocks: ids [N, L] (0 = [PAD]) and segment ids [N, L]."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def source_files(data_root: Path, patterns: list[str]) -> list[list[Path]]:
    """Files of each source pattern (sorted); a pattern that matches nothing is an error naming it."""
    out = []
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(data_root / pattern)
        files = sorted(Path(p) for p in glob.glob(full))
        if not files:
            raise DataError(f"corpus source '{pattern}' matches no file (looked for {full})")
        out.append(files)
    return out


def _open_text(path: Path):
    if path.suffix == ".gz":
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise DataError(f"{path}: named .gz but is not gzip data")
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_documents(files: list[Path], max_bytes: int | None = None) -> Iterator[list[str]]:
    """Documents (lists of non-empty lines) from files, stopping after about `max_bytes` of text."""
    read = 0
    for path in files:
        doc: list[str] = []
        number = 0
        try:
            with _open_text(path) as f:
                for number, raw in enumerate(f, 1):  # noqa: B007 (read after the loop: error line, emptiness)
                    line = raw.decode("utf-8").strip()
                    read += len(line) + 1
                    if line:
                        doc.append(line)
                    elif doc:
                        yield doc
                        doc = []
                    if max_bytes and read >= max_bytes:
                        break
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{number}: not UTF-8 text ({e.reason})") from None
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: cannot read ({e})") from None
        if number == 0:
            raise DataError(f"{path}: no text (empty file)")
        if doc:
            yield doc
        if max_bytes and read >= max_bytes:
            return


def _pack_document(lines: list[list[int]], max_len: int, rng: random.Random, cls: int, sep: int,
                   single_prob: float, short_prob: float) -> Iterator[tuple[list[int], list[int]]]:
    room = max_len - 3  # [CLS] A [SEP] B [SEP]
    pieces = [ln[i:i + room] for ln in lines for i in range(0, len(ln), room) if ln]
    current: list[list[int]] = []
    target = room
    for i, piece in enumerate(pieces):
        current.append(piece)
        if sum(map(len, current)) >= target or i == len(pieces) - 1:
            yield _segments(current, room, rng, cls, sep, single_prob)
            current = []
            target = rng.randint(5, room) if rng.random() < short_prob else room


def _segments(lines: list[list[int]], room: int, rng: random.Random, cls: int, sep: int,
              single_prob: float) -> tuple[list[int], list[int]]:
    if len(lines) == 1 or rng.random() < single_prob:
        a = [t for ln in lines for t in ln][: room + 1]
        return [cls, *a, sep], [0] * (len(a) + 2)
    cut = rng.randint(1, len(lines) - 1)
    a, b = [t for ln in lines[:cut] for t in ln], [t for ln in lines[cut:] for t in ln]
    while len(a) + len(b) > room:  # truncate the longer segment from its end, as BERT does
        (a if len(a) > len(b) else b).pop()
    return [cls, *a, sep, *b, sep], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def build_blocks(files_per_source: list[list[Path]], tokenizer, max_len: int, max_bytes: int | None,
                 seed: int = 0, single_prob: float = 0.1, short_prob: float = 0.05,
                 weights: list[float] | None = None) -> Blocks:
    """Tokenise and pack every source; with `weights`, resample blocks so each source has that share."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    rng = random.Random(seed)
    per_source = []
    for files in files_per_source:
        rows = []
        batch: list[list[str]] = []
        for doc in iter_documents(files, max_bytes):
            batch.append(doc)
            if len(batch) >= 256:
                rows.extend(_pack_batch(batch, tokenizer, max_len, rng, single_prob, short_prob))
                batch = []
        rows.extend(_pack_batch(batch, tokenizer, max_len, rng, single_prob, short_prob))
        per_source.append(rows)
    if weights:
        total = sum(len(r) for r in per_source)
        per_source = [[rows[rng.randrange(len(rows))] for _ in range(int(total * w / sum(weights)))]
                      for rows, w in zip(per_source, weights)]
    rows = [r for src in per_source for r in src]
    rng.shuffle(rows)
    ids = np.zeros((len(rows), max_len), dtype=np.int32)
    types = np.zeros((len(rows), max_len), dtype=np.int8)
    for i, (a, t) in enumerate(rows):
        ids[i, : len(a)] = a
        types[i, : len(t)] = t
    return Blocks(ids, types)


def _pack_batch(docs, tokenizer, max_len, rng, single_prob, short_prob):
    if not docs:
        return []
    flat = [line for doc in docs for line in doc]
    encoded = tokenizer(flat, add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"]
    out, k = [], 0
    for doc in docs:
        lines, k = encoded[k:k + len(doc)], k + len(doc)
        out.extend(_pack_document(lines, max_len, rng, tokenizer.cls_token_id, tokenizer.sep_token_id,
                                  single_prob, short_prob))
    return out


def corpus_key(files_per_source: list[list[Path]], tokenizer_id: str, settings: dict) -> str:
    """Identity of a packed corpus: file names and sizes, the tokenizer's vocab digest and the packing settings."""
    h = hashlib.sha256()
    for files in files_per_source:
        for f in files:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(tokenizer_id.encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cached_blocks(cache_dir: Path, key: str, build) -> Blocks:
    """Load the packed corpus `key` from its Arrow cache (memory-mapped), building and saving it once."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing
    from datasets import Dataset, load_from_disk

    path = cache_dir / f"corpus-{key}"
    if not (path / "dataset_info.json").exists():
        blocks = build()
        tmp = cache_dir / f"corpus-{key}.{os.getpid()}.tmp"  # per process: workers may build one key at once
        Dataset.from_dict({"input_ids": blocks.input_ids, "token_type_ids": blocks.token_type_ids}) \
            .save_to_disk(str(tmp))
        publish(tmp, path)
        return blocks
    ds = load_from_disk(str(path)).with_format("numpy")
    return Blocks(np.asarray(ds["input_ids"], dtype=np.int32), np.asarray(ds["token_type_ids"], dtype=np.int8))


def publish(tmp: Path, path: Path) -> None:
    """Rename a finished cache folder into place (atomic: a killed build never leaves a half cache that looks
    finished); if another process published the same key first, keep theirs (same inputs, same content)."""
    try:
        tmp.rename(path)
    except OSError:
        if not path.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
