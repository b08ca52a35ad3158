"""lossconf: a conformance suite and harness for cross-entropy implementations.

The import package is ``harness``; the distribution is ``lossconf``. Nothing
here imports a framework: torch and jax are imported inside their adapters.
"""

__version__ = "0.1.0"
