"""electra_bench: an experiment-tracking benchmark harness for ELECTRA (Clark et al., ICLR 2020).

The package stands in floors. A module imports only from a lower floor, or from a module listed before it on its
own floor; tests/test_layers.py reads the list below and holds every import to it (module level and inside
functions), so a feature cut across floors fails CI instead of closing a circle.

Floors, low to high:
  ground:    registry, paths, redact, sizes, optim, progress, tokenizer, model, metrics, perturb, tasks, corpus, stats, safe_yaml
  contracts: schema, claims, results
  unit:      build, flops, pretrain, robustness, finetune, units
  suite:     config, suite
  reports:   robustness_tables, headline_plot, pretrain_plot, plots, tables, verdicts, compare, eta
  edges:     tracking, leases
  drivers:   runner, search, worker
  face:      cli

Ground holds what needs no config: registries, model code, metrics with their directions, task specs, perturbations.
Contracts are the shapes the rest agree on: the config schema (every knob and default), the claim and table
vocabulary, records and their statistics. Unit turns one resolved config into a trained model and its scores.
Suite loads and checks a suite (tasks resolved once, here) and expands it into units with run keys. Reports render
records into tables, verdicts and comparisons; a renderer only formats a table model aggregated once. Edges are the
side effects: MLflow (only tracking.py imports it) and the Optuna-backed leases. Drivers run plans, studies and
workers. The face is the command line, the only reader of argv.

Imports between modules are at module level, except where a deferred import keeps torch (or, in cli.py, any
command's dependencies) off a path that does not need it, such as a fully cached re-run; each such import says so
in a comment. No module imports another's private (`_`-prefixed) names.
"""
__version__ = "0.1.0"
