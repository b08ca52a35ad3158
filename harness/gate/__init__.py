"""The CI gate: expectations, baselines, history, and the verdict of a run.

Layer 5: imports reports and below.
"""
