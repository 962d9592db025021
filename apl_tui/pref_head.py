"""A preference head on frozen features: a bootstrap ensemble of Bradley–Terry logistic models.

Each completion y of a prompt x has a feature vector φ(x, y) (the reference model's last hidden
state mean-pooled over the completion, see `Policy.sequence_logps(features=True)`). A member m of
the ensemble scores a completion u_m(y) = w_mᵀ φ(y) and says p(y₁ ≻ y₂) = σ(u_m(y₁) − u_m(y₂)); it
is fitted by ridge-regularised logistic regression on the differences φ(y₁) − φ(y₂) of the a/b
labels (no intercept: the model must be antisymmetric in which completion is called A).

Members are fitted on bootstrap resamples (multinomial counts per label), so their spread is an
uncertainty that needs no DPO round. The fit is cheap at any label count because it happens in
an r-dimensional subspace (r ≤ 64) of the differences: with n ≤ r labels that subspace is the span
of the data, where ridge's solution lies anyway (exact); beyond it, a randomized range finder
keeps the r leading directions (ridge shrinks the others hardest). Newton's method there costs
n·r² per step.

Worked example (one label, "a" won, φ(a) − φ(b) = [2, 0]): every member's weight points along
[1, 0], so u(a) > u(b) and p(a ≻ b) > 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_MAX_NEWTON = 20
_RANGE_ROWS = 2048


@dataclass(frozen=True)
class PrefHead:
    """A fitted ensemble. Arrays are read-only by convention (the dataclass is frozen)."""

    basis: np.ndarray = field(metadata={"help": "(d, r) orthonormal columns spanning the fitted subspace"})
    scale: float = field(metadata={"help": "features are divided by it: the labels' RMS difference norm"})
    weights: np.ndarray = field(metadata={"help": "(M, r) one weight vector per member, in the subspace"})
    n_labels: int = field(metadata={"help": "a/b labels it was fitted on"})

    @property
    def members(self) -> int:
        """M, the ensemble size."""
        return int(self.weights.shape[0])

    def utilities(self, phi: np.ndarray) -> np.ndarray:
        """(M, n) each member's score u_m(y) of each row of phi (n, d); only differences mean anything."""
        z = (np.asarray(phi, dtype=np.float64) @ self.basis) / self.scale  # (n, r)
        return self.weights @ z.T  # (M, n)

    def prefer(self, phi_a: np.ndarray, phi_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) over members of p(a ≻ b) for rows of phi_a, phi_b (n, d) each; shapes (n,)."""
        logits = self.utilities(np.asarray(phi_a) - np.asarray(phi_b))  # (M, n)
        p = _sigmoid(logits)
        return p.mean(axis=0), p.std(axis=0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free σ


def subspace(diffs: np.ndarray, rank: int, seed: int) -> np.ndarray:
    """(d, r) orthonormal basis: the span of the rows when there are few, else their r leading directions."""
    n, d = diffs.shape
    if n <= rank:
        q, r_ = np.linalg.qr(diffs.T)  # (d, n): the exact span of the data
        keep = np.abs(np.diag(r_)) > 1e-10 * max(1.0, float(np.abs(r_).max(initial=0.0)))
        return q[:, keep] if keep.any() else q[:, :1]
    rank = min(rank, d)
    rng = np.random.default_rng(seed)
    # The leading directions of a few thousand rows are those of all of them, at a fraction of the cost.
    rows = diffs if n <= _RANGE_ROWS else diffs[rng.choice(n, _RANGE_ROWS, replace=False)]
    omega = rng.standard_normal((d, rank))
    y = rows.T @ (rows @ omega)  # (d, r): one power iteration sharpens the leading directions
    q, _ = np.linalg.qr(y)
    return q


def _newton(z: np.ndarray, y: np.ndarray, counts: np.ndarray, ridge: float, w0: np.ndarray) -> np.ndarray:
    """Ridge logistic regression (no intercept) on rows z (n, r) with per-row counts, by Newton."""
    w = w0.copy()
    eye = np.eye(z.shape[1])
    for _ in range(_MAX_NEWTON):
        p = _sigmoid(z @ w)  # (n,)
        grad = z.T @ (counts * (p - y)) + ridge * w  # (r,)
        hess = (z * (counts * p * (1.0 - p))[:, None]).T @ z + ridge * eye  # (r, r)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max(initial=0.0)) < 1e-4 * (1.0 + float(np.abs(w).max(initial=0.0))):
            break
    return w


def fit_head(diffs: np.ndarray, a_won: np.ndarray, *, members: int = 5, ridge: float = 1.0, rank: int = 64,
             seed: int = 0) -> PrefHead:
    """Fit the ensemble on label rows φ(a) − φ(b) (n, d) and outcomes (n,) True where A won.

    Member 0..M−1 each see a bootstrap resample of the labels (multinomial counts, seeded). The
    features are scaled so the labels' differences have unit RMS norm; `ridge` is then the prior
    precision of a member's weights (λ = 1: a priori a typical difference moves the logit by ≈ 1).
    """
    x = np.asarray(diffs, dtype=np.float64)
    y = np.asarray(a_won, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"diffs {x.shape} and outcomes {y.shape} disagree")
    if x.shape[0] == 0:
        raise ValueError("the head needs at least one a/b label")
    if members < 1 or ridge <= 0:
        raise ValueError("members must be ≥ 1 and ridge > 0")
    scale = float(np.sqrt((x * x).sum(axis=1).mean())) or 1.0
    basis = subspace(x, rank, seed)
    z = (x @ basis) / scale  # (n, r)
    rng = np.random.default_rng(seed + 1)
    n = z.shape[0]
    full = _newton(z, y, np.ones(n), ridge, np.zeros(z.shape[1]))
    weights = np.stack([_newton(z, y, rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64), ridge, full)
                        for _ in range(members)])  # warm start from the full fit: fewer steps
    return PrefHead(basis=basis, scale=scale, weights=weights, n_labels=n)
