"""Confidence intervals for accuracies."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (correct out of n).

    Preferred over the normal approximation because it stays inside [0, 1] and behaves at 0% and
    100%, which small evaluations hit often. n == 0 gives the uninformative (0, 1).
    """
    if n < 0 or correct < 0 or correct > n:
        raise ValueError(f"wilson_interval: need 0 <= correct <= n (got {correct}/{n})")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
