"""``trajemb prepare --engine ray``: the scenario list as a Ray dataset, windows cut in Ray tasks.

Each Ray task runs ``trajemb.data.prepare.process_chunk`` on a batch of inputs, the very function the
local process pool runs, and returns its ``ChunkResult`` (windows + per-input errors) as one row.
Rows come back to the driver in input order, where ``prepare_table`` writes them exactly as for the
local engine (same rows, same content hash; progress, ``--skip-bad`` and errors unchanged).

On a multi-node cluster the input folders (and ``--maps-dir``) must be at the same path on every node
(a shared filesystem); the table itself is written by the driver.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trajemb.core.ray_runtime import cluster_resources, data_context, ray_session
from trajemb.data.prepare import ChunkResult, Job, PrepareConfig, chunk_size, process_chunk
from trajemb.data.schema import Source, WindowConfig


def _cut_batch(batch: dict[str, np.ndarray], window: WindowConfig, maps_dir: str | None) -> dict[str, Any]:
    """Ray task: one batch of input rows -> one row holding their ``ChunkResult``."""
    jobs = [
        Job(kind, Path(path), Source(source))
        for kind, path, source in zip(batch["kind"], batch["path"], batch["source"], strict=True)
    ]
    result = process_chunk((jobs, window, maps_dir))
    return {"result": np.array([result], dtype=object)}


def run_chunks_on_ray(jobs: list[Job], config: PrepareConfig) -> Iterator[ChunkResult]:
    """Chunk results of ``jobs`` in input order, computed by Ray Data tasks.

    ``config.workers`` caps the tasks running at once (0: as many as the cluster has CPUs).
    """
    with ray_session(config.ray_address) as ray:
        cpus = max(1, int(cluster_resources().get("CPU", 1)))
        size = chunk_size(len(jobs), config.workers or cpus)
        rows = [{"kind": j.kind, "path": str(j.path), "source": j.source.value} for j in jobs]
        with ray.data.DataContext.current(data_context()):
            ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(jobs) / size))
            ds = ds.map_batches(
                _cut_batch,
                batch_size=size,
                batch_format="numpy",
                fn_kwargs={"window": config.window, "maps_dir": config.maps_dir},
                compute=ray.data.TaskPoolStrategy(size=config.workers or None),
                num_cpus=1,
            )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield from batch["result"]
