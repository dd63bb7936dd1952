"""The cached default data: built once, reused, rebuilt when the cached table is outdated."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from trajemb.data.prepare import PrepareConfig, prepare_table
from trajemb.data.store import METADATA_KEY, read_table
from trajemb.data.synth.generate import MARKER_FILE, SynthConfig, generate
from trajemb.serving.pipeline import DEFAULT_DATA_GENERATOR, DefaultDataPaths, build_default_table


def test_default_table_is_reused_and_rebuilt_when_outdated(tmp_path: Path) -> None:
    table = build_default_table(tmp_path, num_scenarios=3, seed=5, progress=False)
    path = tmp_path / "default-s5-n3" / "table.parquet"
    mtime = path.stat().st_mtime_ns
    again = build_default_table(tmp_path, num_scenarios=3, seed=5, progress=False)
    assert path.stat().st_mtime_ns == mtime and again.content_hash == table.content_hash
    # A table in an older format (as an earlier release left in the cache) is rebuilt, not an error.
    old = pq.read_table(path)
    manifest = {**table.manifest, "format_version": 1}
    pq.write_table(old.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()}), path)
    rebuilt = build_default_table(tmp_path, num_scenarios=3, seed=5, progress=False)
    assert rebuilt.manifest["format_version"] == table.manifest["format_version"]
    assert rebuilt.content_hash == table.content_hash


def test_default_bundle_checkpoints_open_on_the_default_model(tmp_path: Path) -> None:
    """The built-in bundle's models: the default model first (the explorer opens a bundle on its first
    model), the other shipped checkpoints by name, none of those kept out of it."""
    from trajemb.serving.pipeline import DEFAULT_MODEL, OUTSIDE_DEFAULT_BUNDLE, default_bundle_checkpoints

    names = ["compact-cosine-d4", DEFAULT_MODEL, "a-model", *OUTSIDE_DEFAULT_BUNDLE]
    for name in names:
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "card.json").write_text("{}")
    got = [c.name for c in default_bundle_checkpoints(tmp_path)]
    rest = sorted(set(names) - OUTSIDE_DEFAULT_BUNDLE - {DEFAULT_MODEL})
    assert got == [DEFAULT_MODEL, *rest]


def test_default_data_of_another_generator_is_made_again(tmp_path: Path) -> None:
    """Default data cached by an earlier release (generator 1, with or without the version in its marker)
    is generated again with the default generator and its table rebuilt (the bundle follows the table's
    content hash)."""
    assert DEFAULT_DATA_GENERATOR == 2
    fresh = build_default_table(tmp_path / "fresh", num_scenarios=2, seed=5, progress=False)
    paths = DefaultDataPaths(tmp_path / "cache" / "default-s5-n2")
    generate(SynthConfig(num_scenarios=2, seed=5, workers=1, generator=1), paths.scenarios, progress=False)
    prepare = PrepareConfig(av2_dirs=(str(paths.scenarios),), workers=1, maps_dir=str(paths.maps))
    prepare_table(prepare, paths.table, progress=False)
    old = read_table(paths.table).content_hash
    assert old != fresh.content_hash
    table = build_default_table(tmp_path / "cache", num_scenarios=2, seed=5, progress=False)
    marker = json.loads((paths.scenarios / MARKER_FILE).read_text())
    assert marker["generator_version"] == DEFAULT_DATA_GENERATOR
    assert table.content_hash == fresh.content_hash
    # A folder from before generators had versions is generator 1's: made again too.
    del marker["generator_version"]
    (paths.scenarios / MARKER_FILE).write_text(json.dumps(marker))
    build_default_table(tmp_path / "cache", num_scenarios=2, seed=5, progress=False)
    assert (
        json.loads((paths.scenarios / MARKER_FILE).read_text())["generator_version"] == DEFAULT_DATA_GENERATOR
    )
