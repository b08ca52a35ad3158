"""Small case files and adapters shared by the report, gate, plugin and history tests.

The cases compute expected values with the oracle at run time (``expected: oracle``)
so these tests do not depend on the built-in corpus.
"""

from __future__ import annotations

CASES = """
cases:
  - name: plain_mean
    why: the unweighted mean over rows
    logits: [[0.25, -1.0, 2.0], [1.5, 0.0, -0.5]]
    target: [2, 1]
    dtype: [float64, float32]
    expected: oracle
    tags: [basic]
  - name: weighted_mean
    why: the weighted mean divides by sum_i w[y_i]
    logits: [[0.25, -1.0, 2.0], [1.5, 0.0, -0.5], [-0.5, 0.5, 1.0]]
    target: [2, 1, 1]
    weight: [0.5, 2.0, 1.0]
    dtype: [float64, float32]
    expected: oracle
    tags: [weights]
  - name: kdim_sum
    why: the class axis is dim 1
    logits: [[[0.25, -1.0], [2.0, 0.5], [-0.5, 1.0]]]
    target: [[0, 2]]
    reduction: sum
    dtype: [float64]
    expected: oracle
  - name: label_out_of_range
    why: a class index >= C must raise
    logits: [[0.25, -1.0, 2.0]]
    target: [3]
    expect_error: index_out_of_range
    dtype: [float64]
"""

WRONG_MEAN = """
import numpy as np
from harness import Adapter, Output
from harness.adapters.numpy_ref import NumpyAdapter, cross_entropy
from harness.dtypes import cast


class WrongMean(NumpyAdapter):
    '''The numpy adapter with a classic bug: the weighted mean divides by N.'''

    name = "numpy"

    def run(self, inputs):
        loss, grad = cross_entropy(inputs)
        if inputs.reduction == "mean" and inputs.weight is not None:
            keep = inputs.target != inputs.ignore_index
            scale = np.sum(inputs.weight[inputs.target[keep]]) / np.sum(keep)
            loss, grad = loss * scale, grad * scale
        return Output(cast(loss, inputs.dtype), cast(grad, inputs.dtype))
"""

SLIGHTLY_OFF = """
import numpy as np
from harness import Output
from harness.adapters.numpy_ref import NumpyAdapter, cross_entropy
from harness.dtypes import cast
from harness.oracle.error_model import THRESHOLD, error_bounds
from harness.oracle.problem import Problem


class SlightlyOff(NumpyAdapter):
    '''In float32, a loss off by 0.9 of what is allowed: an accuracy regression, not a failure.'''

    name = "numpy"

    def run(self, inputs):
        loss, grad = cross_entropy(inputs)
        if inputs.dtype == "float32":
            loss = np.asarray(loss, np.float64)
            bound = error_bounds(Problem.of_call(inputs), "float32", loss, None).loss
            loss = loss + 0.9 * THRESHOLD * bound
        return Output(cast(loss, inputs.dtype), cast(grad, inputs.dtype))
"""
