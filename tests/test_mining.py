"""Vectorised mining against a plain per-anchor loop (the original's approach) on small batches."""

from __future__ import annotations

import pytest
import torch

from trajemb.core.errors import ConfigError
from trajemb.training.mining import mine_triplets, pair_masks


def batch(B: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sim = torch.rand(B, B, generator=g)
    sim = (sim + sim.T) / 2
    emb = torch.nn.functional.normalize(torch.randn(B, 4, generator=g), dim=-1)
    groups = torch.arange(B) // 3  # three windows per track
    return sim, emb, groups[:, None] == groups[None, :]


Reference = dict[int, tuple[set[int], set[int], int, int]]


def reference(sim: torch.Tensor, thr: float, exclude: torch.Tensor, strategy: str) -> Reference:
    """Per anchor: (positive set, negative set, hardest positive, hardest negative), by a loop."""
    out = {}
    for i in range(sim.shape[0]):
        pos = {j for j in range(sim.shape[0]) if j != i and not exclude[i, j] and sim[i, j] >= thr}
        neg = {j for j in range(sim.shape[0]) if j != i and not exclude[i, j] and sim[i, j] < thr}
        if pos and neg:
            out[i] = (pos, neg, min(pos, key=lambda j: sim[i, j]), max(neg, key=lambda j: sim[i, j]))
    return out


@pytest.mark.parametrize("strategy", ["random", "hard", "semi-hard"])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.8])
def test_valid_triplets(strategy: str, thr: float) -> None:
    sim, emb, exclude = batch()
    ref = reference(sim, thr, exclude, strategy)
    t = mine_triplets(
        sim,
        thr,
        strategy,
        embeddings=emb,
        margin=0.3,
        exclude=exclude,
        generator=torch.Generator().manual_seed(1),
    )
    assert sorted(t.anchor.tolist()) == sorted(ref)  # exactly the anchors with a positive and a negative
    for a, p, n in zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist(), strict=True):
        pos, neg, hard_p, hard_n = ref[a]
        assert a != p and a != n
        assert p in pos and n in neg  # positives above, negatives below threshold, same track excluded
        if strategy == "hard":
            assert (p, n) == (hard_p, hard_n)
        if strategy == "semi-hard":
            d = torch.cdist(emb, emb)
            semi = [j for j in neg if d[a, p] < d[a, j] < d[a, p] + 0.3]
            assert (n in semi) if semi else (n == hard_n)


def test_random_mining_covers_all_candidates() -> None:
    sim, _, exclude = batch(B=12)
    ref = reference(sim, 0.5, exclude, "random")
    a0 = next(iter(ref))
    seen_p, seen_n = set(), set()
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        t = mine_triplets(sim, 0.5, "random", exclude=exclude, generator=g)
        k = t.anchor.tolist().index(a0)
        seen_p.add(int(t.positive[k]))
        seen_n.add(int(t.negative[k]))
    assert seen_p == ref[a0][0] and seen_n == ref[a0][1]


def test_no_positive_no_triplet_and_errors() -> None:
    sim = torch.eye(4) * 0.0
    assert len(mine_triplets(sim, 0.5, "random")) == 0
    pos, neg = pair_masks(torch.ones(3, 3), 0.5)
    assert not pos.diagonal().any() and not neg.any()
    with pytest.raises(ConfigError, match="semi-hard mining needs the batch embeddings"):
        mine_triplets(torch.rand(4, 4), 0.5, "semi-hard")
    with pytest.raises(ConfigError, match="unknown mining strategy"):
        mine_triplets(torch.rand(4, 4), 0.5, "hardest")
