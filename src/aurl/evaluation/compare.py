"""Set-level comparison of two sets of per-piece features (pure functions of arrays).

For each feature, following Yang & Lerch (2020), "On the evaluation of generative models in music"
(Neural Computing and Applications 32; the mgeval method):

- the **intra-set** distances are all pairwise distances between reference pieces, the **inter-set**
  distances all distances between a sample piece and a reference piece (absolute difference for a
  scalar, Euclidean distance for a histogram);
- each distance set is smoothed into a density by a Gaussian KDE; unlike mgeval (which lets
  ``scipy.stats.gaussian_kde`` pick a bandwidth per curve) both curves share **one** bandwidth,
  Scott's rule on the pooled distances, so that the overlap is a property of the two sets and not
  of two different smoothings;
- **overlap area** = ∫ min(p_intra, p_inter): 1 when samples sit among the reference as its own
  pieces do, near 0 when they are far away; **KL** = KL(p_intra ‖ p_inter) in nats on the same grid.

The densities are binned KDEs (distances histogrammed on a 2,048-point grid, then convolved with
the Gaussian kernel), exact to the grid step and fast enough for 100 × 400 pieces in a training
loop. The **Fréchet distance** compares Gaussians fitted to the whole feature vectors (scalars and
histogram bins concatenated; each feature centred on the reference mean and scaled to unit total
variance in the reference, so that no unit and no rare histogram bin dominates): ‖μ_s − μ_r‖² + Tr(Σ_s + Σ_r − 2 (Σ_s Σ_r)^½), as in FID.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from scipy.spatial.distance import cdist, pdist

GRID_POINTS = 2048
FRECHET_RIDGE = 1e-6  # on standardized features: negligible beside their unit variance
KL_EPS = 1e-10  # density floor inside the KL so that an empty inter-set region stays finite


def _as_2d(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[:, None] if values.ndim == 1 else values


def _valid(values: np.ndarray) -> np.ndarray:
    """Rows without NaN (a feature undefined for a piece leaves that piece out)."""
    return values[~np.isnan(values).any(axis=1)]


def intra_inter_distances(
    samples: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(intra-reference pairwise distances, sample-to-reference distances); rows are pieces."""
    s, r = _valid(_as_2d(samples)), _valid(_as_2d(reference))
    return pdist(r), cdist(s, r).ravel()


def shared_bandwidth(a: np.ndarray, b: np.ndarray) -> float:
    """Scott's rule on the pooled distances: 1.06 σ n^(-1/5) (a floor keeps it > 0)."""
    pooled = np.concatenate([a, b])
    sigma = float(np.std(pooled))
    span = float(np.ptp(pooled)) if len(pooled) else 0.0
    h = 1.06 * sigma * len(pooled) ** (-0.2) if len(pooled) else 0.0
    return max(h, 1e-3 * span, 1e-6)


def kde_pair(
    a: np.ndarray, b: np.ndarray, bandwidth: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid, density of a, density of b): binned Gaussian KDEs sharing one bandwidth."""
    h = shared_bandwidth(a, b) if bandwidth is None else bandwidth
    lo = min(a.min(), b.min()) - 4 * h
    hi = max(a.max(), b.max()) + 4 * h
    edges = np.linspace(lo, hi, GRID_POINTS + 1)
    step = edges[1] - edges[0]
    grid = (edges[:-1] + edges[1:]) / 2
    half = int(np.ceil(4 * h / step))
    offsets = np.arange(-half, half + 1) * step
    kernel = np.exp(-0.5 * (offsets / h) ** 2)
    kernel /= kernel.sum() * step  # integrates to 1 on the grid
    dens = []
    for x in (a, b):
        counts = np.histogram(x, bins=edges)[0].astype(np.float64) / len(x)
        dens.append(np.convolve(counts, kernel, mode="same"))
    return grid, dens[0], dens[1]


def overlap_area(p: np.ndarray, q: np.ndarray, grid: np.ndarray) -> float:
    """∫ min(p, q) on a uniform grid (1 = the same density)."""
    step = grid[1] - grid[0]
    return float(np.minimum(p, q).sum() * step)


def kl_divergence(p: np.ndarray, q: np.ndarray, grid: np.ndarray) -> float:
    """KL(p ‖ q) in nats on a uniform grid, with both densities floored at ``KL_EPS``."""
    step = grid[1] - grid[0]
    p, q = np.maximum(p, KL_EPS), np.maximum(q, KL_EPS)
    p, q = p / (p.sum() * step), q / (q.sum() * step)
    return float((p * np.log(p / q)).sum() * step)


def compare_feature(samples: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Overlap area and KL of one feature: samples (S,) or (S, D), reference (R,) or (R, D)."""
    intra, inter = intra_inter_distances(samples, reference)
    if len(intra) == 0 or len(inter) == 0:
        return {"overlap_area": float("nan"), "kl": float("nan"), "bandwidth": float("nan")}
    h = shared_bandwidth(intra, inter)
    grid, p_intra, p_inter = kde_pair(intra, inter, h)
    return {
        "overlap_area": overlap_area(p_intra, p_inter, grid),
        "kl": kl_divergence(p_intra, p_inter, grid),
        "bandwidth": h,
    }


def frechet_distance(
    samples: np.ndarray, reference: np.ndarray, blocks: list[int] | None = None
) -> float:
    """Fréchet distance between Gaussians fitted to (S, D) and (R, D) feature vectors.

    ``blocks`` gives the number of columns of each feature (a histogram is one block of bins;
    default: every column its own block). Each block is centred on the reference mean and divided
    by one scale, the square root of the reference's total variance over the block, so every
    feature weighs the same and a histogram bin that is almost always empty in the reference does
    not get a tiny scale of its own (per-bin standardization made one rare ">12 beats" bin dominate
    the distance). A block constant in the reference is left out (its overlap area still judges
    it); rows with NaN are left out.
    """
    s, r = _valid(_as_2d(samples)), _valid(_as_2d(reference))
    if len(s) < 2 or len(r) < 2:
        return float("nan")
    blocks = blocks or [1] * r.shape[1]
    if sum(blocks) != r.shape[1]:
        raise ValueError(f"blocks sum to {sum(blocks)}, the vectors have {r.shape[1]} columns")
    mu, var = r.mean(axis=0), r.var(axis=0)
    scale, keep = np.ones(r.shape[1]), np.zeros(r.shape[1], dtype=bool)
    start = 0
    for width in blocks:
        total = float(var[start : start + width].sum())
        if total > 1e-12:
            scale[start : start + width] = np.sqrt(total)
            keep[start : start + width] = True
        start += width
    s, r = (s[:, keep] - mu[keep]) / scale[keep], (r[:, keep] - mu[keep]) / scale[keep]
    mu_s, mu_r = s.mean(axis=0), r.mean(axis=0)
    cov_s, cov_r = np.atleast_2d(np.cov(s, rowvar=False)), np.atleast_2d(np.cov(r, rowvar=False))
    # histogram bins sum to 1, so the covariances are singular by construction: a small ridge
    # (as the FID reference code adds when sqrtm fails) keeps the square root well defined
    eye = np.eye(len(cov_s)) * FRECHET_RIDGE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = np.real(linalg.sqrtm((cov_s + eye) @ (cov_r + eye)))
    diff = mu_s - mu_r
    value = float(diff @ diff + np.trace(cov_s) + np.trace(cov_r) - 2 * np.trace(covmean))
    return max(value, 0.0)  # identical sets give about -1e-12 through sqrtm's rounding


def nanmean(values: np.ndarray) -> float | list[float]:
    """Mean over pieces, ignoring NaN rows: a float for a scalar, a list for a histogram."""
    values = _valid(_as_2d(values))
    if len(values) == 0:
        return float("nan")
    m = values.mean(axis=0)
    return float(m[0]) if m.shape == (1,) else [float(x) for x in m]
