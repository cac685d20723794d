"""Tasks as data: specs, registry and loaders. Importing this package registers the built-in formats and tasks."""
from electra_bench.tasks.base import (
    FORMATS,
    TASKS,
    DataError,
    HubSource,
    ItemError,
    SplitLayout,
    TaskSpec,
    default_data_root,
    features_for,
    glue_tasks,
    load_split,
    register_task,
    task_from_dict,
)
from electra_bench.tasks.conll import read_conll
from electra_bench.tasks.glue import both_orders, read_glue_tsv

__all__ = [
    "FORMATS", "TASKS", "DataError", "HubSource", "ItemError", "SplitLayout", "TaskSpec", "both_orders",
    "default_data_root", "features_for", "glue_tasks", "load_split", "read_conll", "read_glue_tsv", "register_task",
    "task_from_dict",
]
