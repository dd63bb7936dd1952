"""How good are the direction labels? Prints their confusion against the truth, as Markdown.

* synthetic held-out scenarios (a seed the rules were not tuned on; they were tuned on seed 22): the
  labels of the table (lane-graph rule) and of the shape-only rule (``trajemb.data.labels.direction_class``,
  what a user's own query gets) against the generator's ``true_manoeuvre``;
* the real AV2 fixtures: the table's labels against the windows a person labelled by eye
  (``tests/data/av2_fixture_windows_by_eye.csv``).

Usage: python scripts/label_quality.py [--scenarios 300] [--seed 23] [--work .cache/labels]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from trajemb.analysis.label_quality import label_agreement, read_labelled_sample, sample_agreement
from trajemb.data.labels import direction_class
from trajemb.data.prepare import PrepareConfig, prepare_table
from trajemb.data.schema import WindowConfig
from trajemb.data.store import read_table
from trajemb.data.synth.generate import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
BY_EYE = REPO / "tests" / "data" / "av2_fixture_windows_by_eye.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=300)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--work", default=".cache/labels")
    default_fixtures = os.environ.get(
        "TRAJEMB_AV2_FIXTURES", str(REPO.parent / "shared" / "data" / "av2_fixtures")
    )
    parser.add_argument("--fixtures", default=default_fixtures)
    args = parser.parse_args()
    work = Path(args.work)
    scenarios, table = (
        work / f"synth-s{args.seed}-n{args.scenarios}",
        work / f"synth-s{args.seed}-n{args.scenarios}.parquet",
    )
    if not scenarios.is_dir():
        generate(SynthConfig(args.scenarios, args.seed), scenarios)
    prepare_table(PrepareConfig(av2_dirs=(str(scenarios),)), table)
    synth = read_table(table)
    truth = synth.meta.true_manoeuvre.to_numpy()
    print(f"## Synthetic held-out: {args.scenarios} scenarios, seed {args.seed}, {len(synth)} windows\n")
    print("Lane-graph rule (the table's `direction`):\n")
    print(label_agreement(truth, synth.meta.direction.to_numpy()).markdown() + "\n")
    print("Shape-only rule (user queries, road users off the map):\n")
    shape, _, _ = direction_class(synth.xy_agent.astype(np.float64))
    print(label_agreement(truth, shape).markdown() + "\n")
    fixtures = Path(args.fixtures)
    real = work / "fixtures-stride5.parquet"
    prepare_table(
        PrepareConfig(
            av2_dirs=(str(fixtures / "motion_forecasting"),),
            sensor_log_dirs=(str(fixtures / "sensor_logs"),),
            window=WindowConfig(stride_steps=5),
        ),
        real,
    )
    meta = read_table(real).meta
    sample = read_labelled_sample(BY_EYE)
    print(f"## Real AV2 fixtures: {len(sample.window_id)} of {len(meta)} windows labelled by eye\n")
    agreement = sample_agreement(sample, meta.window_id.to_numpy(), meta.direction.to_numpy())
    print(agreement.markdown())
    print(f"\naccuracy {agreement.accuracy:.3f}")
    keep = sample.sure
    labels = meta.set_index("window_id").loc[sample.window_id[keep], "direction"].to_numpy()
    print(
        f"on the {int(keep.sum())} windows marked sure: accuracy {np.mean(labels == sample.label[keep]):.3f}"
    )


if __name__ == "__main__":
    from trajemb.core.errors import TrajembError

    try:
        main()
    except TrajembError as exc:  # bad input: one line, as the CLI says it
        raise SystemExit(f"label_quality: error: {exc}") from None
