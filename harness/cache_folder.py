"""The folder of lossconf's caches, which every layer that keeps something between runs shares.

``$LOSSCONF_CACHE_DIR``, else ``$XDG_CACHE_HOME/lossconf``, else ``~/.cache/lossconf``;
``LOSSCONF_CACHE_DIR=off`` (or empty) disables every cache. It holds the loaded case
files (``cases/``, ``harness.cases.load_cache``), the expected values
(``harness.oracle.cache``) and JAX's compiled programs (``jax/``, the JAX adapters).
``harness.cache_prune`` keeps lossconf's own entries within a size and an age.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """The cache folder, or None when disabled."""
    configured = os.environ.get("LOSSCONF_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in ("", "off") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lossconf"
