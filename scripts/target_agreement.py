"""How closely each model of a bundle retrieves the neighbours of the similarity it was trained on.

For every window (or a random sample of ``--max-windows`` of them, queries and database alike), the
share of its ``--k`` nearest neighbours from other tracks in the model's embedding (Euclidean, as the bundle's index
searches) that are among its ``--k`` nearest by the model's training similarity
(``trajemb.training.similarity``, Cosine or FFT, read from the bundle): 1 when the embedding reproduces
its target's neighbourhoods exactly, about k / N at random. Beside it, minADE@k of both neighbour sets,
so that a model that learns its target better can be told from one that retrieves better in metres
(docs/retrieval-quality.md, "Why the FFT models lose on generator 2's data").

Usage: python scripts/target_agreement.py BUNDLE [--models a,b] [--k 10] [--max-windows 5000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from trajemb.analysis.bundle import Bundle
from trajemb.retrieval.metrics import min_ade_fde
from trajemb.retrieval.search import Groups, exact_search, recall_at_k
from trajemb.training.similarity import SIMILARITIES, similarity_matrix


def target_neighbours(xy: np.ndarray, similarity: str, tracks: np.ndarray, k: int) -> np.ndarray:
    """(N, k) rows of each window's k most similar by ``similarity``, windows of its own track excluded
    (they overlap it), as the evaluation's neighbours are."""
    score = similarity_matrix(torch.from_numpy(xy), similarity).numpy()
    score = np.where(tracks[:, None] == tracks[None, :], -np.inf, score)
    return np.argsort(-score, axis=1, kind="stable")[:, :k]


def mean_min_ade(xy: np.ndarray, ids: np.ndarray) -> float:
    """minADE (m) of (N, T, 2) windows over their (N, k) neighbours, averaged over windows."""
    return float(min_ade_fde(xy, xy[ids])[0].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--models", default=None, help="comma-separated (default: every model)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-windows", type=int, default=5000, help="a random sample beyond this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.k < 1 or args.max_windows <= args.k:
        raise SystemExit("--k must be at least 1 and --max-windows above it")
    bundle = Bundle(args.bundle)
    names = args.models.split(",") if args.models else bundle.model_names
    rows = np.arange(bundle.num_windows)
    if rows.size > args.max_windows:
        rows = np.sort(np.random.default_rng(args.seed).choice(rows, args.max_windows, replace=False))
    if rows.size <= args.k:
        raise SystemExit(f"{args.bundle}: {rows.size} windows, too few for --k {args.k}")
    xy = np.asarray(bundle.xy.rows(rows), dtype=np.float32)
    tracks = Groups.of(bundle.groups[rows])
    targets: dict[str, np.ndarray] = {}
    print(f"{args.bundle}: {rows.size} of {bundle.num_windows} windows, k = {args.k}")
    print("| model | similarity | agreement@k | minADE@k of its neighbours | minADE@k of the target's |")
    print("|---|---|---|---|---|")
    for name in names:
        similarity = str(bundle.model_entry(name).get("similarity"))
        if similarity not in SIMILARITIES:
            print(f"| {name} | {similarity} (no training similarity known) | - | - | - |")
            continue
        if similarity not in targets:
            targets[similarity] = target_neighbours(xy, similarity, tracks.ids, args.k)
        target = targets[similarity]
        z = np.asarray(bundle.embeddings(name).rows(rows), dtype=np.float32)
        _, ids = exact_search(z, z, args.k, exclude=tracks, query_groups=tracks.ids)
        print(
            f"| {name} | {similarity} | {recall_at_k(ids, target):.3f} | {mean_min_ade(xy, ids):.3f} "
            f"| {mean_min_ade(xy, target):.3f} |"
        )


if __name__ == "__main__":
    main()
