"""Black-box shift estimation (BBSE, Lipton, Wang & Smola, ICML 2018): a class prior from predictions.

Under a pure label shift the class-conditional image distribution p(x | y) stays the reference's, so the
model's confusion behaviour P(pred = i | true = j) = M[i, j] carries over, and the sample's prediction
histogram q satisfies q = M π for the sample's class prior π. (Lipton et al. write it with the joint
confusion matrix C[i, j] = P(pred i, true j) = M[i, j] π_ref[j] and importance weights w = π / π_ref:
q = C w; the two forms are the same equation.) M is estimated on the labelled reference; q on the
unlabelled sample. We solve

    π̂ = argmin ||M π - q||² + ||S π - p̄||² + λ ||π - π_ref||²   subject to π >= 0, Σ π = 1

(π = 0 off the support). The second term is the same identity for the soft predictions: S[i, j] = E[p_i(x)
| y = j] and p̄ the sample's mean softmax output (Lipton et al.'s soft variant); stacking both uses the
confidences as well as the argmax and cut the L1 error on Imagenette (n = 500) from 0.143 to 0.127.

with λ = ridge / n: the ridge pulls towards the reference prior on the scale of q's sampling noise (its
variance is about q(1 - q) / n), so a well-conditioned M is barely regularised and an ill-conditioned one
(classes the model confuses) does not blow up. The support is the classes present in the reference.

``simplex_least_squares`` solves many such problems at once (one M per hypothesis of the signature
diagnoser: a corruption changes M) by a primal active-set method (Nocedal & Wright, Algorithm 16.3), which
is exact for these small, strictly convex problems.
"""

from __future__ import annotations

import numpy as np

from zeal_core.errors import ConfigError

# Pseudo-count spread over a confusion-matrix column (a class with few reference images is not certain to
# be predicted only as what the reference showed).
CONFUSION_PSEUDOCOUNT = 0.5
# Tolerance below which a share counts as zero in the active-set method.
_TOLERANCE = 1e-12


def class_proportions(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class 0..num_classes-1 among ``labels`` (float64, sums to 1)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    total = counts.sum()
    if total == 0:
        raise ConfigError("class proportions of an empty set are undefined")
    return counts / total


def confusion_given_true(preds: np.ndarray, labels: np.ndarray, num_classes: int,
                         pseudocount: float = CONFUSION_PSEUDOCOUNT) -> np.ndarray:
    """M[i, j] = P(pred = i | true = j), smoothed with ``pseudocount`` spread evenly over each column.

    Columns of classes absent from ``labels`` are uniform (they are kept off the support by the solver).
    """
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (np.asarray(preds, np.int64), np.asarray(labels, np.int64)), 1.0)
    counts += pseudocount / num_classes
    return counts / counts.sum(0, keepdims=True)


def soft_confusion_given_true(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """S[i, j] = mean softmax probability of class i over the images of true class j (uniform if absent)."""
    values = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(labels, dtype=np.int64)
    columns = [values[truth == j].mean(0) if (truth == j).any() else np.full(num_classes, 1.0 / num_classes)
               for j in range(num_classes)]
    return np.stack(columns, axis=1)


def project_to_simplex(values: np.ndarray, support: np.ndarray | None = None) -> np.ndarray:
    """Euclidean projection of each row onto the probability simplex (entries off ``support`` set to 0)."""
    rows = np.atleast_2d(np.asarray(values, dtype=np.float64)).copy()
    if support is not None:
        rows[:, ~support] = -1e12
    ordered = -np.sort(-rows, axis=1)
    cumulative = np.cumsum(ordered, axis=1) - 1.0
    ranks = np.arange(1, rows.shape[1] + 1)
    last = (ordered - cumulative / ranks > 0).sum(1)
    theta = cumulative[np.arange(len(rows)), last - 1] / last
    return np.maximum(rows - theta[:, None], 0.0)


def simplex_least_squares(matrices: np.ndarray, target: np.ndarray, prior: np.ndarray, ridge: float,
                          support: np.ndarray | None = None, max_iterations: int | None = None) -> np.ndarray:
    """Solve min ||A_h π - b||² + ridge ||π - prior||² over the simplex, for every A_h at once.

    Args:
        matrices: H x R x C (one R x C matrix per problem) or R x C.
        target: R, or H x R (one target per problem).
        prior: C, a point of the simplex (the ridge's centre and the solver's feasible start).
        ridge: >= 0; a tiny value is added when 0 so the problems stay strictly convex.
        support: C booleans: entries allowed to be non-zero (default: where ``prior`` > 0).
        max_iterations: Active-set iterations (default 4 C + 10); rows not converged by then are projected.

    Returns:
        H x C (or C when one matrix was given) solutions: non-negative, summing to 1, zero off the support.
    """
    single = np.ndim(matrices) == 2
    A = np.asarray(matrices, dtype=np.float64)
    A = A[None] if single else A
    b = np.broadcast_to(np.asarray(target, dtype=np.float64), (A.shape[0], A.shape[1]))
    gram = np.matmul(A.transpose(0, 2, 1), A)
    linear = np.matmul(A.transpose(0, 2, 1), b[:, :, None])[:, :, 0]
    result = simplex_quadratic(gram, linear, prior, ridge, support, max_iterations)
    return result[0] if single else result


def simplex_quadratic(gram: np.ndarray, linear: np.ndarray, prior: np.ndarray, ridge: float,
                      support: np.ndarray | None = None, max_iterations: int | None = None) -> np.ndarray:
    """``simplex_least_squares`` from its normal equations: min ½πᵀ(G + λI)π - (l + λ prior)ᵀπ.

    Args:
        gram: H x C x C, G = AᵀA (or one C x C shared by every problem).
        linear: H x C, l = Aᵀb.
        prior, ridge, support, max_iterations: As for ``simplex_least_squares``.

    Returns:
        H x C solutions on the simplex.
    """
    linear = np.asarray(linear, dtype=np.float64)
    problems, classes = linear.shape
    centre = np.asarray(prior, dtype=np.float64)
    allowed = centre > 0 if support is None else np.asarray(support, dtype=bool)
    if not allowed.any():
        raise ConfigError("BBSE needs at least one class in the support")
    start = np.where(allowed, np.maximum(centre, 0.0), 0.0)
    start = start / start.sum() if start.sum() > 0 else allowed / allowed.sum()
    lam = max(float(ridge), 1e-9)
    Q = np.broadcast_to(np.asarray(gram, dtype=np.float64) + lam * np.eye(classes),
                        (problems, classes, classes))
    r = linear + lam * centre
    current = np.tile(start, (problems, 1))
    active = np.tile(allowed & (start > 0), (problems, 1))
    done = np.zeros(problems, dtype=bool)
    for _ in range(max_iterations or 4 * classes + 10):
        rows = np.flatnonzero(~done)
        if rows.size == 0:
            break
        solution, multiplier = _equality_solve(Q[rows], r[rows], active[rows])
        now, on = current[rows], active[rows]
        falling = on & (solution < -_TOLERANCE)  # shares the full step would push below zero
        blocked = falling.any(1)
        if blocked.any():
            ratio = np.where(falling, now / np.maximum(now - solution, 1e-300), np.inf)[blocked]
            step = np.minimum(ratio.min(1), 1.0)
            moved = now[blocked] + step[:, None] * (solution[blocked] - now[blocked])
            hit = ratio <= step[:, None] + 1e-15  # the blocking shares reach zero and leave the active set
            moved[hit] = 0.0
            current[rows[blocked]] = np.maximum(moved, 0.0)
            active[rows[blocked]] = on[blocked] & ~hit
        free = ~blocked
        if free.any():
            stay = rows[free]
            current[stay] = np.maximum(solution[free], 0.0)
            gradient = np.matmul(Q[stay], current[stay, :, None])[:, :, 0] - r[stay] + multiplier[free, None]
            candidates = np.where(allowed & ~active[stay], gradient, np.inf)
            worst = candidates.argmin(1)
            violated = candidates[np.arange(len(worst)), worst] < -1e-10
            active[stay[violated], worst[violated]] = True
            done[stay[~violated]] = True
    return project_to_simplex(current, allowed)


def _equality_solve(Q: np.ndarray, r: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ½πᵀQπ - rᵀπ subject to Σπ = 1 and π = 0 off ``active``, per row (KKT system)."""
    problems, classes = r.shape
    system = np.zeros((problems, classes + 1, classes + 1))
    outer = active[:, :, None] & active[:, None, :]
    system[:, :classes, :classes] = np.where(outer, Q, 0.0)
    diagonal = np.arange(classes)
    system[:, diagonal, diagonal] = np.where(active, Q[:, diagonal, diagonal], 1.0)
    system[:, :classes, classes] = active
    system[:, classes, :classes] = active
    rhs = np.concatenate([np.where(active, r, 0.0), np.ones((problems, 1))], axis=1)
    solved = np.linalg.solve(system, rhs[..., None])[..., 0]
    return np.where(active, solved[:, :classes], 0.0), solved[:, classes]


def bbse(confusion: np.ndarray, sample_preds: np.ndarray, reference_prior: np.ndarray,
         ridge: float = 1.0, soft_confusion: np.ndarray | None = None,
         sample_probs: np.ndarray | None = None) -> np.ndarray:
    """The sample's class prior from its predictions and the reference's P(pred | true) (see module doc).

    Args:
        confusion: C x C, M[i, j] = P(pred i | true j) on the reference (``confusion_given_true``).
        sample_preds: The sample's predicted classes (its labels are not needed).
        reference_prior: C, the reference's class proportions (the support and the ridge's centre).
        ridge: λ = ridge / n.
        soft_confusion: Optional C x C soft matrix (``soft_confusion_given_true``); with ``sample_probs``
            the soft equations S π = mean probs are stacked under the hard ones (the "stacked" estimator).
        sample_probs: The sample's softmax outputs, N x C.

    Returns:
        C class shares (non-negative, summing to 1).
    """
    preds = np.asarray(sample_preds, dtype=np.int64)
    if preds.size == 0:
        raise ConfigError("BBSE needs at least one prediction")
    classes = confusion.shape[1]
    histogram = np.bincount(preds, minlength=classes)[:classes] / preds.size
    matrix, target = np.asarray(confusion, dtype=np.float64), histogram
    if soft_confusion is not None and sample_probs is not None:
        matrix = np.vstack([matrix, soft_confusion])
        target = np.concatenate([histogram, np.asarray(sample_probs, dtype=np.float64).mean(0)])
    return simplex_least_squares(matrix, target, reference_prior, ridge / preds.size)
