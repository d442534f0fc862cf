"""Throughput benchmarks of the ptychography model, run as
``python -m ptyopt.benchmarks.<name>``."""
