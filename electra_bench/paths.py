"""Names that become parts of file paths (suites, tasks, cells, labels): one check, used wherever a name is joined
onto a folder, so no name from a suite file can write outside work/ or results/ (issue #17).

- `name_problem(name, nested)`: why a name cannot be a path part as written (None when it can). Suite names may
  be nested (`paper/table1_small` -> results/paper/table1_small/); task names are one part.
- `path_part(label)`: a free-form label (cell labels carry axis values such as corpus paths) as one safe, distinct
  path part: kept as is when safe, else unsafe characters replaced and a digest of the label appended.
Symlinks under work/ or results/ (say work/ on a bigger disk) are followed on purpose: the folders are the user's.
"""
from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=,()@ \-]*$")
MAX_PART = 100


def name_problem(name: str, nested: bool = False) -> str | None:
    parts = name.split("/") if nested else [name]
    if not name:
        return "a name must not be empty"
    if name.startswith("/") or "\\" in name:
        return f"'{name}' must not start with '/' or contain a backslash (it names a folder)"
    if not nested and "/" in name:
        return f"'{name}' must not contain '/' (it names a file)"
    for part in parts:
        if part in ("", ".", ".."):
            return f"'{name}' must not contain '..', '.' or an empty part (it names a folder)"
        if not _SAFE.match(part) or len(part) > MAX_PART:
            return (f"'{name}': each part starts with a letter or digit and has only letters, digits, spaces and "
                    f"_ . + = , ( ) @ - (at most {MAX_PART} characters)")
    return None


def check_name(name: str, nested: bool = False) -> str:
    """A pydantic validator body: the name, or ValueError saying why it cannot name a file or folder."""
    problem = name_problem(name, nested)
    if problem:
        raise ValueError(problem)
    return name


def path_part(label: str) -> str:
    if name_problem(label) is None:
        return label
    cleaned = re.sub(r"[^A-Za-z0-9_.+=,()@ \-]", "_", label).lstrip("._ -")[:60] or "x"
    return f"{cleaned}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"
