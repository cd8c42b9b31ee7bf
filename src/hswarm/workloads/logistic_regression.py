"""Encrypted logistic-regression inference on scikit-learn's breast-cancer data set.

The model is trained in plaintext by its owner; the patient features are encrypted, the
weights stay plaintext, and the sigmoid is a Chebyshev approximation of
``sigmoid(sum_j w_j * x_j + b)``.

Packing: each patient's 30 features fill a block of 32 slots (2 zeros of padding), and
a ciphertext holds ``slots / 32`` patients side by side. Per ciphertext: one plaintext
multiplication by the tiled weights (one level), five rotate-and-add steps that sum
every block into its first slot (no level), then the series. Each ciphertext is an
independent input, so the rows spread over as many tasks — and workers — as there are
ciphertexts. The decrypted probability of patient ``r`` of a block is slot ``32 r``.

This module defines the workload (program, parameters, data, check); running it is the
caller's job (``hswarm example``, ``hswarm demo``). The data ships inside scikit-learn:
nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from hswarm import errors
from hswarm.crypto import opcodes
from hswarm.crypto.params import Params, preset
from hswarm.program import Program

DEFAULT_PRESET = "ckks"
DEFAULT_SLOTS = 8192  # 256 patients per ciphertext: 3 ciphertexts, 3 independent tasks
SIGMOID_DEGREE = 119  # error ~2e-3 on the data's range
BLOCK = 32  # slots per patient: 30 features, padded to a power of two


@dataclasses.dataclass(frozen=True)
class Workload:
    params: Params
    program: Program
    inputs: dict[str, np.ndarray]
    expected_probability: np.ndarray
    expected_label: np.ndarray
    interval: tuple[float, float]
    model_accuracy: float

    def probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Patients' probabilities from the decrypted outputs (slot 0 of each block)."""
        parts = [np.asarray(outputs[f"p{c}"], dtype=np.float64)[::BLOCK] for c in range(len(outputs))]
        return np.concatenate(parts)

    def check(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Compare decrypted probabilities with the plaintext model."""
        probability = self.probabilities(outputs)
        label = (probability > 0.5).astype(int)
        agreement = float(np.mean(label == self.expected_label))
        return {
            "rows": int(probability.size),
            "agreement": agreement,
            "max_probability_error": float(np.max(np.abs(probability - self.expected_probability))),
            "correct": agreement >= 0.99,
        }


def build(
    preset_name: str = DEFAULT_PRESET,
    rows: int | None = None,
    *,
    allow_insecure: bool | None = None,
    slots: int | None = None,
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
    features = scaled.shape[1]
    assert features <= BLOCK
    base = preset(preset_name, allow_insecure=allow_insecure)
    # fewer slots: fewer patients per ciphertext, so more independent tasks
    default_slots = DEFAULT_SLOTS if base.ring_dim is None else min(DEFAULT_SLOTS, base.ring_dim // 2)
    overrides: dict[str, Any] = {"depth": max(base.depth, need), "slots": slots or default_slots}
    params = preset(preset_name, allow_insecure=allow_insecure, **overrides)

    per_ciphertext = params.slots // BLOCK
    if per_ciphertext < 1:
        raise errors.ParamsError(f"cannot build the workload: needs at least {BLOCK} slots")
    padded = np.zeros((len(scaled), BLOCK))
    padded[:, :features] = scaled
    program = Program()
    inputs = {}
    for c, start in enumerate(range(0, len(scaled), per_ciphertext)):
        rows_here = padded[start : start + per_ciphertext]
        x = program.input(f"x{c}", rows_here.size)
        tiled = np.tile(np.pad(weights, (0, BLOCK - features)), len(rows_here))
        total = x * tiled
        for k in (1, 2, 4, 8, 16):  # block sums land in each block's first slot
            total = total + total.rotate(k)
        program.output(f"p{c}", (total + bias).sigmoid(lo=-bound, hi=bound, degree=SIGMOID_DEGREE))
        inputs[f"x{c}"] = rows_here.reshape(-1)
    return Workload(
        params=params,
        program=program,
        inputs=inputs,
        expected_probability=1.0 / (1.0 + np.exp(-logits)),
        expected_label=model.predict(scaled),
        interval=(-bound, bound),
        model_accuracy=float(np.mean(model.predict(scaled) == target)),
    )
