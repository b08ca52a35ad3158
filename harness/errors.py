"""The exceptions lossconf raises on purpose.

::

    LossconfError                  every error meant for a user, never a traceback
    ├── UsageError                 bad command line (exit code 2)
    ├── CaseFileError              a case file that cannot be loaded or is invalid (exit 2)
    ├── AdapterLoadError           an adapter that cannot be found or loaded (exit 2)
    └── InternalError              a bug in lossconf met while loading or preparing a case (exit 2)

Adapters signal a missing feature by raising ``harness.Unsupported`` (or
``NotImplementedError``); that is a result status, not an error.
"""

from __future__ import annotations

from harness.exit_codes import ExitCode


class LossconfError(Exception):
    """Root of the errors shown to a user as a message, without a traceback."""

    exit_code = int(ExitCode.USAGE)


class UsageError(LossconfError):
    """The command line asks for something that does not exist or does not fit."""


class CaseFileError(LossconfError):
    """A case file is malformed; the message names file, case, field and value."""

    def __init__(
        self,
        path: object,
        message: str,
        *,
        case: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = str(path)
        self.case = case
        self.field = field
        self.line = line
        self.detail = message
        where = self.path if line is None else f"{self.path}:{line}"
        parts = [where]
        if case is not None:
            parts.append(f"case {case!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        super().__init__(": ".join([*parts, message]))


class AdapterLoadError(LossconfError):
    """An adapter named on the command line cannot be resolved or imported."""


class InternalError(LossconfError):
    """lossconf failed where it should not: loading a file that passed validation, or making
    a case's inputs or expected values. Exit code 2, never 1: a broken harness must never
    read as a broken implementation."""

    @classmethod
    def during(
        cls, doing: str, path: object, case: str | None, error: BaseException
    ) -> InternalError:
        where = f"{path}: case {case!r}" if case is not None else str(path)
        return cls(
            f"{where}: internal error while {doing}: {type(error).__name__}: {error} "
            "(a bug in lossconf, not in the case or the implementation; -v shows the "
            "traceback; please report it)"
        )
