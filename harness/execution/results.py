"""Result records: one per case x adapter x dtype."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from harness.execution.compare import Errors


class Status(str, Enum):
    """What one case x adapter x dtype came to; reports list them in this order."""

    PASS = "pass"  # values within tolerance
    RAISED = "raised"  # an invalid-input case raised, as it must
    FAIL = "fail"  # loss or gradient outside tolerance
    ERROR = "error"  # raised where no error was expected, or returned garbage
    MISSING_ERROR = "missing_error"  # an invalid-input case returned instead of raising
    UNSUPPORTED = "unsupported"  # the adapter lacks a feature or dtype the case needs
    CRASH = "crash"  # the adapter's worker process died (--isolate)
    TIMEOUT = "timeout"  # the adapter ran past --timeout

    def __str__(self) -> str:
        return self.value


#: statuses that do not break conformance (exit code 0): the one definition
CONFORMING = frozenset({Status.PASS, Status.RAISED, Status.UNSUPPORTED})
#: the same set as the strings that JSON reports hold
CONFORMING_NAMES = frozenset(s.value for s in CONFORMING)
#: every status name, in the order reports list them
STATUS_NAMES = tuple(s.value for s in Status)


def is_conforming(status: str) -> bool:
    """Whether a status name (as in a JSON report) conforms."""
    return status in CONFORMING_NAMES


@dataclass
class Result:
    case_id: str
    adapter: str
    dtype: str
    status: Status
    message: str = ""
    case_hash: str = ""
    loss_errors: Errors | None = None
    grad_errors: Errors | None = None
    seconds: float = 0.0
    peak_rss_bytes: int | None = None  # peak resident memory of the process during the call
    tags: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    expected_loss: object = None  # a short form for reports
    got_loss: object = None
    notes: list[str] = field(default_factory=list)
    #: the dialect the adapter declares (harness.oracle.dialect): ``status`` is the verdict
    #: under it, the one the gate reads
    semantics: str = "torch"
    #: the verdict under PyTorch's semantics, and what differed there; None: the same as
    #: ``status`` (a torch-dialect adapter, or a result that compared no values)
    torch_status: Status | None = None
    torch_message: str = ""
    #: R of a vocab-parallel run (--world-size): the class axis was split over R ranks
    world_size: int | None = None

    @property
    def conforming(self) -> bool:
        return self.status in CONFORMING

    @property
    def status_under_torch(self) -> Status:
        """The verdict under PyTorch's semantics (``status`` for a torch-dialect adapter)."""
        return self.status if self.torch_status is None else self.torch_status

    @property
    def key(self) -> tuple[str, str, str]:
        """(case id, adapter, dtype): what identifies a result within a run."""
        return (self.case_id, self.adapter, self.dtype)

    def to_dict(self) -> dict:
        extra = {} if self.world_size is None else {"world_size": self.world_size}
        return {
            "case_id": self.case_id,
            "case_hash": self.case_hash,
            "adapter": self.adapter,
            "dtype": self.dtype,
            "status": self.status.value,
            "message": self.message,
            "loss_errors": None if self.loss_errors is None else self.loss_errors.to_dict(),
            "grad_errors": None if self.grad_errors is None else self.grad_errors.to_dict(),
            "seconds": self.seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "tags": list(self.tags),
            "features": list(self.features),
            "expected_loss": self.expected_loss,
            "got_loss": self.got_loss,
            "notes": list(self.notes),
            "semantics": self.semantics,
            "torch_status": self.status_under_torch.value,
            "torch_message": self.message if self.torch_status is None else self.torch_message,
            **extra,
        }
