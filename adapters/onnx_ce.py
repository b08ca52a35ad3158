"""``onnx`` and ``onnxruntime``: ONNX's SoftmaxCrossEntropyLoss operator.

Each call becomes a one-node ONNX model (opset 13, the first with bfloat16)::

    loss = SoftmaxCrossEntropyLoss(scores, labels[, weights],
                                   reduction=REDUCTION, ignore_index=IGNORE_INDEX)

with ``scores`` the logits (N, C) or (N, C, d1, ..., dK) in the case's dtype, ``labels``
the int64 class indices and ``weights`` the per-class weights. PyTorch's call maps onto
it one to one: ``reduction`` is passed as given (an invalid one included: raising is the
operator's business), and ``ignore_index`` always, since PyTorch always has one (-100).
The models are built with ``onnx.helper`` and cached per (dtype, reduction,
ignore_index, weighted).

``onnx`` runs them with ``onnx.reference.ReferenceEvaluator``, ONNX's executable
specification in NumPy; ``onnxruntime`` with an ``InferenceSession`` on the CPU execution
provider. Both compute in the input's dtype, as a user's model would.

What the operator lacks is declared ``unsupported`` (see ``UNSUPPORTED``): it has no label
smoothing and no probability targets, requires a batch axis (no unbatched (C,) input),
and neither runtime differentiates (ONNX's training ``Gradient`` operator is in neither),
so only the loss is checked.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from harness.adapters import Adapter, CallInputs, Output

#: the features SoftmaxCrossEntropyLoss lacks (ONNX operator documentation, opset 13)
UNSUPPORTED = frozenset({"label_smoothing", "probability_target", "unbatched", "grad"})
UNSUPPORTED_SOURCE = (
    "declared by adapters/onnx_ce.py: ONNX's SoftmaxCrossEntropyLoss has no label smoothing, "
    "no probability targets and no unbatched (C,) input, and the runtime computes no gradient"
)
OPSET = 13
#: the IR version of opset 13, so that an older onnxruntime loads what a newer onnx builds
IR_VERSION = 7


def tensor_type(dtype: str) -> int:
    """The ``onnx.TensorProto`` element type of a lossconf dtype name."""
    from onnx import TensorProto

    return {
        "float64": TensorProto.DOUBLE,
        "float32": TensorProto.FLOAT,
        "float16": TensorProto.FLOAT16,
        "bfloat16": TensorProto.BFLOAT16,
    }[dtype]


@functools.lru_cache(maxsize=128)
def build_model(dtype: str, reduction: str, ignore_index: int, weighted: bool) -> Any:
    """The one-node ``onnx.ModelProto`` of one call's options (inputs of any shape)."""
    from onnx import TensorProto, helper

    elem = tensor_type(dtype)
    inputs = [
        helper.make_tensor_value_info("scores", elem, None),
        helper.make_tensor_value_info("labels", TensorProto.INT64, None),
    ]
    if weighted:
        inputs.append(helper.make_tensor_value_info("weights", elem, None))
    node = helper.make_node(
        "SoftmaxCrossEntropyLoss",
        [i.name for i in inputs],
        ["loss"],
        reduction=reduction,
        ignore_index=ignore_index,
    )
    graph = helper.make_graph(
        [node], "cross_entropy", inputs, [helper.make_tensor_value_info("loss", elem, None)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def feeds(inputs: CallInputs) -> dict[str, np.ndarray]:
    """The model's inputs: floating arrays in the case's dtype (bfloat16 as ml_dtypes'
    type, which onnx brings), labels as int64."""
    if inputs.dtype == "bfloat16":
        import ml_dtypes

        def floating(a: np.ndarray) -> np.ndarray:
            return np.asarray(a).astype(ml_dtypes.bfloat16)  # exact: carrier values
    else:

        def floating(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a, dtype=np.dtype(inputs.dtype))

    out = {
        "scores": floating(inputs.logits),
        "labels": np.ascontiguousarray(inputs.target, dtype=np.int64),
    }
    if inputs.weight is not None:
        out["weights"] = floating(inputs.weight)
    return out


def to_carrier(value: Any, dtype: str) -> np.ndarray:
    """An output in the carrier of ``dtype`` (bfloat16 as exact float32)."""
    a = np.asarray(value)
    return a.astype(np.float32) if dtype == "bfloat16" else a


class OnnxAdapter(Adapter):
    """SoftmaxCrossEntropyLoss run by ONNX's reference evaluator."""

    name = "onnx"
    description = "ONNX SoftmaxCrossEntropyLoss (opset 13) on onnx.reference.ReferenceEvaluator"
    requires: tuple[str, ...] = ("onnx",)
    semantics = "onnx"
    unsupported = UNSUPPORTED
    unsupported_source = UNSUPPORTED_SOURCE

    def load(self) -> None:
        from onnx.reference import ReferenceEvaluator  # noqa: F401

    def version(self) -> str:
        import onnx

        return f"onnx {onnx.__version__}"

    def session(self, inputs: CallInputs) -> Any:
        """A runnable for this call's model: ``.run(None, feeds) -> [loss]``."""
        return _reference_evaluator(
            inputs.dtype, inputs.reduction, int(inputs.ignore_index), inputs.weight is not None
        )

    def run(self, inputs: CallInputs) -> Output:
        # the reference evaluator is NumPy: its overflow/underflow warnings would flood
        # stderr; what it computes is unchanged and judged by the comparison
        with np.errstate(all="ignore"):
            (loss,) = self.session(inputs).run(None, feeds(inputs))
        return Output(loss=to_carrier(loss, inputs.dtype))


@functools.lru_cache(maxsize=128)
def _reference_evaluator(dtype: str, reduction: str, ignore_index: int, weighted: bool) -> Any:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(build_model(dtype, reduction, ignore_index, weighted))


@functools.lru_cache(maxsize=128)
def _inference_session(dtype: str, reduction: str, ignore_index: int, weighted: bool) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a failed session or call is raised, not logged
    model = build_model(dtype, reduction, ignore_index, weighted)
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


class OnnxRuntimeAdapter(OnnxAdapter):
    """SoftmaxCrossEntropyLoss run by onnxruntime's CPU execution provider."""

    name = "onnxruntime"
    description = "ONNX SoftmaxCrossEntropyLoss (opset 13) on onnxruntime's CPU provider"
    requires = ("onnxruntime", "onnx")

    def load(self) -> None:
        import onnx  # noqa: F401  (builds the models)
        import onnxruntime

        # errors come back as exceptions (and become results); logged too, they would flood
        # stderr with one red line per invalid-input case
        onnxruntime.set_default_logger_severity(4)
        lacking = sorted(d for d in ("float16", "bfloat16") if not self._runs_in(d))
        if lacking:
            # onnxruntime 1.32's CPU provider expands the operator into a function whose
            # nodes have no bfloat16 kernels: the session cannot be created at all
            self.unsupported = self.unsupported | frozenset(lacking)
            self.unsupported_source = (
                f"{UNSUPPORTED_SOURCE}; onnxruntime cannot create a session for "
                f"{' or '.join(lacking)} inputs (checked when the adapter loads)"
            )

    @staticmethod
    def _runs_in(dtype: str) -> bool:
        """Whether onnxruntime can create a session for the operator in ``dtype``."""
        try:
            _inference_session(dtype, "mean", -100, False)
        except Exception:  # onnxruntime's InvalidGraph, NotImplemented, Fail: all alike here
            return False
        return True

    def version(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"

    def session(self, inputs: CallInputs) -> Any:
        return _inference_session(
            inputs.dtype, inputs.reduction, int(inputs.ignore_index), inputs.weight is not None
        )
