"""Measuring: evaluation, comparison against the PyTorch reference, timing, bench and its report."""
