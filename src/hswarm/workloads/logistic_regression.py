"""Encrypted logistic-regression inference on scikit-learn's breast-cancer data set.

The model is trained in plaintext by its owner; the patient features are encrypted
(one ciphertext chunk per feature column, rows in the slots), the weights stay
plaintext, and the sigmoid is a Chebyshev approximation. The computation is
``sigmoid(sum_j w_j * x_j + b)``: one scalar multiplication level plus the series.

This module defines the workload (program, parameters, data, check); running it is the
caller's job (``hswarm example``, later the swarm demo). The data ships inside
scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from hswarm.crypto import opcodes
from hswarm.crypto.params import Params, preset
from hswarm.program import Program

DEFAULT_PRESET = "ckks"
SIGMOID_DEGREE = 119  # error ~2e-3 on the data's range


@dataclasses.dataclass(frozen=True)
class Workload:
    params: Params
    program: Program
    inputs: dict[str, np.ndarray]
    expected_probability: np.ndarray
    expected_label: np.ndarray
    interval: tuple[float, float]
    model_accuracy: float

    def check(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Compare decrypted probabilities with the plaintext model."""
        probability = np.asarray(outputs["probability"], dtype=np.float64)
        label = (probability > 0.5).astype(int)
        agreement = float(np.mean(label == self.expected_label))
        return {
            "rows": int(probability.size),
            "agreement": agreement,
            "max_probability_error": float(np.max(np.abs(probability - self.expected_probability))),
            "correct": agreement >= 0.99,
        }


def build(
    preset_name: str = DEFAULT_PRESET, rows: int | None = None, *, allow_insecure: bool | None = None
) -> Workload:
    """Train the plaintext model and build the encrypted inference program."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features, target = load_breast_cancer(return_X_y=True)
    scaled = StandardScaler().fit_transform(features)
    model = LogisticRegression(C=1.0, max_iter=5000).fit(scaled, target)
    if rows is not None:
        scaled, target = scaled[:rows], target[:rows]
    weights, bias = model.coef_[0], float(model.intercept_[0])
    logits = scaled @ weights + bias
    # The model owner bounds the logits on its training data, with a margin.
    bound = float(math.ceil(1.2 * np.max(np.abs(model.decision_function(scaled)))))
    interval = {"coefficients": [0.0] * (SIGMOID_DEGREE + 1), "lo": -bound, "hi": bound}
    need = 1 + opcodes.depth_cost("chebyshev", "ckks", interval)  # weights, then the series
    base = preset(preset_name, allow_insecure=allow_insecure)
    params = preset(preset_name, allow_insecure=allow_insecure, depth=max(base.depth, need))

    program = Program()
    columns = [program.input(f"x{j}", len(scaled)) for j in range(scaled.shape[1])]
    logit = columns[0] * float(weights[0])
    for column, weight in zip(columns[1:], weights[1:], strict=True):
        logit = logit + column * float(weight)
    logit = logit + bias
    program.output("probability", logit.sigmoid(lo=-bound, hi=bound, degree=SIGMOID_DEGREE))
    return Workload(
        params=params,
        program=program,
        inputs={f"x{j}": scaled[:, j] for j in range(scaled.shape[1])},
        expected_probability=1.0 / (1.0 + np.exp(-logits)),
        expected_label=model.predict(scaled),
        interval=(-bound, bound),
        model_accuracy=float(np.mean(model.predict(scaled) == target)),
    )
