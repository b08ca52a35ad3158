"""``mpmath``, imported on first use.

The oracle needs mpmath only on its slow path (values the double-double pass cannot
round, and the reference itself); loading it costs about 40 ms that ``--list``,
``validate`` and a warm run never need.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any


class _OnFirstUse:
    """Stands in for a module; the first attribute read imports it and copies its names in."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        self.__dict__.update(vars(module))
        return getattr(module, attr)


if TYPE_CHECKING:
    import mpmath
else:
    mpmath = _OnFirstUse("mpmath")

__all__ = ["mpmath"]
