"""The seed article's hand computation of ``nn.CrossEntropyLoss()``, as a lossconf adapter.

The article checks PyTorch against loops over Python floats::

    loss = (1/N) * sum_i ( -x[i][y_i] + log(sum_j exp(x[i][j])) )

for logits x of shape (N, C) and class indices y of shape (N,). There is no
gradient, so it is checked for the loss only (``from_numpy`` without ``grad=``)
and the report says so. Its signature has no weight, ignore_index, reduction or
label_smoothing, so cases needing them are reported unsupported ("inferred from
the signature"); the shapes and targets it cannot take are declared below.

Run it on the seed cases:

    python -m harness --adapter examples/seed_numpy.py -k seed
"""

import math

from harness import from_numpy


def cross_entropy(output, label):
    """Mean cross-entropy of (N, C) ``output`` and (N,) ``label``, as the article computes it."""
    n, c = output.shape
    first = [0.0] * n
    for i in range(n):
        first[i] = -float(output[i][label[i]])
    second = [0.0] * n
    for i in range(n):
        for j in range(c):
            second[i] += math.exp(output[i][j])  # no max shift: huge logits overflow
    res = 0.0
    for i in range(n):
        res += first[i] + math.log(second[i])
    return res / n


adapter = from_numpy(
    cross_entropy,
    name="seed-article",
    unsupported={"probability_target", "kdim", "unbatched", "empty", "invalid_input"},
)
