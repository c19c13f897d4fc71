"""Utilities of the original Neuropod's Python API (`eval_utils`)."""
