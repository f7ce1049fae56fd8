"""The Informativeness Token Selector's choices (docs/method.md s.2).

Every patch j of a video has a score s_j = max_h A[h, j] (the last vision layer's attention from v_cls,
computed by the backbone). The selector takes the k best patches jointly over all frames (not k per
frame), best first, ties to the lower flat patch index. `pig select`, `pig extract --patches top-N`
and training all choose through these functions, so they agree on the patches and their order.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..choices import SELECTORS



def top_k_patches(its_score: np.ndarray, k: int) -> np.ndarray:
    """[N, T*L] scores -> [N, k] flat patch indices, best first, ties to the lower index."""
    return np.argsort(-its_score, axis=1, kind="stable")[:, :k]




def choose_patches(its_score: np.ndarray, k: int, selector: str = "its") -> np.ndarray:
    """[N, T*L] scores -> [N, k] flat patch indices: the ITS top k, or k random patches."""
    if selector == "its":
        return top_k_patches(its_score, k)
    if selector == "random":
        return random_patches(its_score, k)
    raise ValueError(f"unknown selector {selector!r}; expected one of {SELECTORS}")


def random_patches(its_score: np.ndarray, k: int) -> np.ndarray:
    """k distinct patches per video drawn uniformly, seeded by the row's scores: the same video (same
    scores) always gets the same patches, and the choice carries no information from the scores."""
    out = np.empty((len(its_score), k), np.int64)
    for i, row in enumerate(np.asarray(its_score, np.float32)):
        seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(row).tobytes()).digest()[:8], "little")
        out[i] = np.random.default_rng(seed).choice(row.shape[0], k, replace=False)
    return out


def kept_patch_index(its_score: np.ndarray, kept: int) -> np.ndarray:
    """Flat indices of the patches extract stores: all of them, or the `kept` best, in patch order."""
    total = its_score.shape[1]
    if kept >= total:
        return np.broadcast_to(np.arange(total, dtype=np.int32), its_score.shape).copy()
    return np.sort(top_k_patches(its_score, kept), axis=1).astype(np.int32)


def gather_patches(stored: np.ndarray, stored_index: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Features [N, k, D] of the chosen flat patch indices, looked up among the kept patches
    (stored [N, K, D] with their flat indices stored_index [N, K])."""
    out = np.empty(chosen.shape + (stored.shape[-1],), np.float32)
    for i in range(len(chosen)):
        position = {int(p): j for j, p in enumerate(stored_index[i])}
        missing = [int(p) for p in chosen[i] if int(p) not in position]
        if missing:  # extract stores the patches its scores choose: the two datasets disagree
            raise PatchIndexError(i, missing[0])
        out[i] = stored[i][[position[int(p)] for p in chosen[i]]]
    return out


class PatchIndexError(ValueError):
    """A chosen patch is not among the stored ones: patch_index does not match its_score."""

    def __init__(self, row: int, patch: int):
        super().__init__(f"row {row}: patch {patch} chosen from its_score is not in patch_index")
        self.row, self.patch = row, patch


def select_patch_tokens(patches, its_score, k: int, selector: str = "its"):
    """Torch twin for a batch the backbone just computed: patches [B, T*L, D], its_score [B, T*L]
    -> the k selected patch tokens [B, k, D] (the same choice as choose_patches)."""
    import torch

    if selector == "its":  # on the scores' device: no copy to the host (a GPU would wait for it every step)
        chosen = torch.sort(-its_score.detach().float(), dim=1, stable=True).indices[:, :k]
    else:
        chosen = torch.from_numpy(choose_patches(its_score.detach().float().cpu().numpy(), k, selector))
        chosen = chosen.to(patches.device)
    return patches.gather(1, chosen[..., None].expand(-1, -1, patches.shape[-1]))
