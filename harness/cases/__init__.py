"""Case files: the Case record, loading and validating YAML, recipes, selection, writing.

Layer 2: imports ``harness.oracle`` and ``harness.adapters`` (the call record), nothing above.
"""
