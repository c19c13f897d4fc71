"""The Neuropods benchmark suite: each case measures Neuropods against what
a user would use instead, in the same process; `benchmarks/run.py` runs the
cases and writes the report."""
