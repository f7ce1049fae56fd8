"""Multiply-adds per query of each retrieval method (docs/method.md sections 7 and 8).

    index scan (two tower = PIG)    N*D
    + EERCF rerank of K             N*D + K fine scorings
    xpool (single tower)            N * (3 D^2 + 2 (M+T) D + D), with every video's key/value projections
                                    cached; as X-Pool computes it (no cache) N * (2 (M+T) D^2 + 3 D^2 + 2 (M+T) D + D)
"""

from __future__ import annotations


def two_tower_macs(n_videos: int, D: int) -> int:
    """Multiply-adds per query for the dot products with every video embedding."""
    return n_videos * D


def rerank_macs(k: int, T: int, num_patches: int, D: int, with_ps: bool = False) -> int:
    """Multiply-adds per query to fine-score k candidates (features stored normalised).

    Per candidate: T*D (t.F_f) + T*T (W_F mixing) + T (S_fw sum) + T*D (TIB pooling of f~)
    + 2*D (pooled squared norm, t.pooled); with patches NP*D (t.P_p) + NP (S_pw sum); with_ps
    adds NP*D + 2*D. Softmax exps, divisions and square roots are not counted.
    """
    per = T * D + T * T + T + T * D + 2 * D
    if num_patches:
        per += num_patches * D + num_patches
        if with_ps:
            per += num_patches * D + 2 * D
    return k * per


def xpool_macs(n_videos: int, keys: int, dim: int, cached_keys: bool = True) -> int:
    """The fusioner run with the real query against every video: keys = M + T tokens per video."""
    per_pair = 3 * dim * dim + 2 * keys * dim + dim
    if not cached_keys:
        per_pair += 2 * keys * dim * dim
    return n_videos * per_pair
