"""electra_bench: an experiment-tracking benchmark harness for ELECTRA (Clark et al., ICLR 2020)."""
__version__ = "0.1.0"
