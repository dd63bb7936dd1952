"""Bundles: the folder the explorer opens.

```
bundle.json                 manifest: table hash, and per model the hashes of its checkpoint,
                            embeddings and index, so a mismatched file is refused on open
table.parquet               the trajectory table
maps/<map_key>.npz          reduced maps of the scenarios the windows come from
baselines.json              evaluation of the baselines on the same queries
models/<name>/checkpoint/   model.safetensors, config.json, card.json
models/<name>/embeddings.npy (N, D) float32;  index.faiss;  umap.npy (N, 2);  report.json
```
Rows of embeddings, index, UMAP and table are the same windows in the same order: the table's
``window_id`` column is the one mapping from rows to ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from trajemb import __version__
from trajemb.atomic import atomic_dir
from trajemb.checkpoint import WEIGHTS_FILE, load_checkpoint
from trajemb.data.maps import MapCache, MapGeometry
from trajemb.embed import embed_windows, resolve_device
from trajemb.errors import DataError
from trajemb.evaluate import EvalConfig, baseline_reports, evaluate_features, sample_queries
from trajemb.index import IndexSpec, NeighborIndex, build_faiss_index, load_faiss_index, save_faiss_index
from trajemb.model import TrajectoryEncoder
from trajemb.projection import umap_2d
from trajemb.store import TrajectoryTable, read_table

log = logging.getLogger(__name__)

MANIFEST = "bundle.json"
BUNDLE_FORMAT = "trajemb-bundle/1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BundleConfig:
    index: IndexSpec = field(default_factory=IndexSpec)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    umap: bool = True
    device: str = "auto"
    seed: int = 0


def _model_name(checkpoint: Path, card: dict[str, Any], taken: set[str]) -> str:
    folder = checkpoint.parent.name if checkpoint.name in ("best", "last") else checkpoint.name
    name = str(card.get("name") or folder)
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def build_bundle(
    table_path: Path,
    checkpoints: list[Path],
    out: Path,
    maps_dir: Path | None = None,
    config: BundleConfig = BundleConfig(),
    progress: bool = True,
) -> dict[str, Any]:
    """Embed, index, project and evaluate ``table_path`` under every checkpoint; write ``out`` atomically."""
    if not checkpoints:
        raise DataError("give at least one --checkpoint")
    table = read_table(Path(table_path))
    device = resolve_device(config.device)
    groups = table.track_groups()
    queries = sample_queries(len(table), config.evaluation)
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "trajemb_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "table_sha256": table.content_hash,
        "num_windows": len(table),
        "num_steps": table.num_steps,
        "config": asdict(config),
        "models": {},
    }
    with atomic_dir(Path(out)) as tmp:
        shutil.copyfile(table_path, tmp / "table.parquet")
        manifest["maps"] = _copy_maps(table, maps_dir, tmp / "maps")
        dims: set[int] = set()
        for i, ckpt in enumerate(checkpoints, start=1):
            model, card = load_checkpoint(Path(ckpt), device)
            name = _model_name(Path(ckpt), card, set(manifest["models"]))
            folder = tmp / "models" / name
            shutil.copytree(ckpt, folder / "checkpoint", ignore=shutil.ignore_patterns("train_state.pt"))
            log.info(
                "model %d/%d %s: embedding and indexing %d windows", i, len(checkpoints), name, len(table)
            )
            t0 = time.perf_counter()
            emb = embed_windows(model, table.xy_agent, device, progress=progress)
            encode_s = time.perf_counter() - t0
            np.save(folder / "embeddings.npy", emb, allow_pickle=False)
            save_faiss_index(build_faiss_index(emb, config.index), folder / "index.faiss")
            if config.umap:
                log.info("model %d/%d %s: UMAP of %d points", i, len(checkpoints), name, len(table))
                np.save(folder / "umap.npy", umap_2d(emb, config.seed), allow_pickle=False)
            report: dict[str, Any] = evaluate_features(
                table, emb, queries, groups, config.evaluation, config.index
            )
            report["encode_ms_per_window"] = 1000.0 * encode_s / len(table)
            report["encode_device"] = str(device)
            (folder / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
            dims.add(model.config.embedding_dim)
            manifest["models"][name] = {
                "embedding_dim": model.config.embedding_dim,
                "similarity": card.get("similarity"),
                "checkpoint_sha256": sha256_file(folder / "checkpoint" / WEIGHTS_FILE),
                "embeddings_sha256": sha256_file(folder / "embeddings.npy"),
                "index_sha256": sha256_file(folder / "index.faiss"),
                "index": asdict(config.index),
                "umap": config.umap,
            }
        log.info("evaluating the baselines (oracle, random, PCA, FFT features, untrained encoder)")
        baselines = {
            dim: baseline_reports(table, dim, config.evaluation, config.seed) for dim in sorted(dims)
        }
        merged: dict[str, Any] = {}
        for dim_reports in baselines.values():
            merged.update(dim_reports)
        (tmp / "baselines.json").write_text(json.dumps(merged, indent=2), encoding="utf-8")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _copy_maps(table: TrajectoryTable, maps_dir: Path | None, dest: Path) -> dict[str, int]:
    dest.mkdir(parents=True)
    keys = sorted(set(table.meta["map_key"]))
    if maps_dir is None:
        log.warning("no maps folder given: the bundle will show trajectories without maps")
        return {"available": 0, "needed": len(keys)}
    found = 0
    for key in keys:
        src = Path(maps_dir) / f"{key}.npz"
        if src.is_file():
            shutil.copyfile(src, dest / src.name)
            found += 1
    if found < len(keys):
        log.warning("%d of %d maps missing in %s", len(keys) - found, len(keys), maps_dir)
    return {"available": found, "needed": len(keys)}


@dataclass
class BundleModel:
    """One model of an opened bundle: encoder, embeddings, index (rows = table rows), UMAP, report."""

    name: str
    encoder: TrajectoryEncoder
    card: dict[str, Any]
    embeddings: np.ndarray  # (N, D) float32
    index: NeighborIndex
    umap_xy: np.ndarray | None  # (N, 2)
    report: dict[str, Any]


class Bundle:
    """An opened bundle; models load lazily and are verified against the manifest's hashes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DataError(f"{self.root}: not a trajemb bundle (no {MANIFEST})")
        self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if self.manifest.get("format") != BUNDLE_FORMAT:
            raise DataError(
                f"{self.root}: bundle format {self.manifest.get('format')!r}, expected {BUNDLE_FORMAT}"
            )
        self.table = read_table(self.root / "table.parquet")
        if self.table.content_hash != self.manifest["table_sha256"]:
            raise DataError(
                f"{self.root}: table.parquet ({self.table.content_hash[:12]}) is not the table this bundle "
                f"was built from ({self.manifest['table_sha256'][:12]}); rebuild it with `trajemb bundle`"
            )
        self.groups = self.table.track_groups()
        self._models: dict[str, BundleModel] = {}
        self._maps = MapCache(self.root / "maps")
        self.row_of_id = {wid: i for i, wid in enumerate(self.table.meta["window_id"].tolist())}

    @property
    def model_names(self) -> list[str]:
        return list(self.manifest["models"])

    def row(self, window_id: str) -> int:
        if window_id not in self.row_of_id:
            raise DataError(
                f"window id {window_id!r} is not in this bundle (ids look like {self.table.meta['window_id'].iloc[0]!r})"
            )
        return self.row_of_id[window_id]

    def model(self, name: str) -> BundleModel:
        if name in self._models:
            return self._models[name]
        if name not in self.manifest["models"]:
            raise DataError(f"no model {name!r} in {self.root}; models: {', '.join(self.model_names)}")
        entry = self.manifest["models"][name]
        folder = self.root / "models" / name
        files = {
            "checkpoint_sha256": folder / "checkpoint" / WEIGHTS_FILE,
            "embeddings_sha256": folder / "embeddings.npy",
            "index_sha256": folder / "index.faiss",
        }
        for key, file in files.items():
            if not file.is_file():
                raise DataError(f"{file}: missing from the bundle")
            if sha256_file(file) != entry[key]:
                raise DataError(
                    f"{file}: does not match the bundle manifest (built from another checkpoint or table?); "
                    "rebuild the bundle with `trajemb bundle`"
                )
        encoder, card = load_checkpoint(folder / "checkpoint")
        embeddings = np.load(folder / "embeddings.npy", allow_pickle=False)
        if embeddings.shape != (len(self.table), encoder.config.embedding_dim):
            raise DataError(
                f"{folder}: embeddings have shape {embeddings.shape}, "
                f"expected ({len(self.table)}, {encoder.config.embedding_dim})"
            )
        faiss_index = load_faiss_index(folder / "index.faiss", expected_dim=encoder.config.embedding_dim)
        umap_path = folder / "umap.npy"
        umap_xy = np.load(umap_path, allow_pickle=False) if umap_path.is_file() else None
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        model = BundleModel(
            name, encoder, card, embeddings, NeighborIndex(faiss_index, self.groups), umap_xy, report
        )
        self._models[name] = model
        return model

    def baselines(self) -> dict[str, Any]:
        path = self.root / "baselines.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def map_geometry(self, map_key: str) -> MapGeometry | None:
        """Reduced map of a scenario, or None where the bundle has no map for it."""
        try:
            return self._maps.read(map_key)
        except DataError:
            return None

    def neighbors(
        self, model: str, row: int, k: int, exclude_same_track: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(k,) squared distances and (k,) rows of the neighbours of table row ``row``."""
        if not 0 <= row < len(self.table):
            raise DataError(f"row {row} outside [0, {len(self.table)})")
        if k > len(self.table) - 1:
            raise DataError(f"k = {k} is larger than the database ({len(self.table) - 1} other windows)")
        m = self.model(model)
        groups = self.groups[[row]] if exclude_same_track else None
        dist, ids = m.index.search(m.embeddings[[row]], k, groups, np.array([row]))
        return dist[0], ids[0]
