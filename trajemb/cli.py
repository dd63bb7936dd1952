"""Command line of trajemb: ``trajemb <command>``. Flags map one-to-one onto the frozen config dataclasses.

Expected failures (``TrajembError``) print one line and exit with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from trajemb import __version__
from trajemb.errors import TrajembError
from trajemb.schema import PAPER_FOCAL_FUTURE, WindowConfig

log = logging.getLogger("trajemb")

DEFAULT_CACHE = Path(".cache")


def _add_window_flags(p: argparse.ArgumentParser) -> None:
    d = WindowConfig()
    p.add_argument(
        "--steps", type=int, default=d.num_steps, help="window length T at 10 Hz (default 60 = 6 s)"
    )
    p.add_argument(
        "--stride", type=int, default=d.stride_steps, help="steps between window starts (default 10)"
    )
    p.add_argument(
        "--tracks", choices=["focal", "scored", "all"], default=d.tracks, help="AV2 track categories"
    )
    p.add_argument("--object-types", default="", help="comma-separated AV2 object types (default: all)")
    p.add_argument(
        "--min-speed",
        type=float,
        default=d.min_speed_mps,
        help="moving filter: net displacement / duration in m/s (default 1.0; 0 keeps parked)",
    )
    p.add_argument(
        "--span",
        choices=["all", "future"],
        default=d.span,
        help="slide over the whole scenario or only the AV2 prediction horizon (steps >= 50)",
    )
    p.add_argument(
        "--preset",
        choices=["paper"],
        default=None,
        help="paper: the focal track's 60-step future, one window per scenario (overrides window flags)",
    )


def _window_config(args: argparse.Namespace) -> WindowConfig:
    if args.preset == "paper":
        return PAPER_FOCAL_FUTURE
    types = tuple(t.strip() for t in args.object_types.split(",") if t.strip())
    return WindowConfig(args.steps, args.stride, args.tracks, types, args.min_speed, args.span)


def _cmd_synth(args: argparse.Namespace) -> int:
    from trajemb.synth.generate import SynthConfig, generate

    config = SynthConfig(args.scenarios, args.seed, args.workers, args.av2_serializer)
    seconds = generate(config, Path(args.out), progress=not args.quiet)
    print(f"wrote {config.num_scenarios} scenarios to {args.out} in {seconds:.1f} s")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from trajemb.prepare import PrepareConfig, prepare_table

    config = PrepareConfig(
        av2_dirs=tuple(args.av2 or ()),
        sensor_log_dirs=tuple(args.sensor_logs or ()),
        window=_window_config(args),
        workers=args.workers,
        skip_bad=args.skip_bad,
        maps_dir=args.maps_dir,
    )
    report = prepare_table(config, Path(args.out), progress=not args.quiet)
    print(
        f"wrote {report.num_windows} windows from {report.num_inputs} inputs to {args.out} "
        f"in {report.elapsed_s:.1f} s ({report.num_inputs / report.elapsed_s:.0f} inputs/s)"
    )
    if report.skipped:
        print(f"skipped {len(report.skipped)} bad input(s):")
        for _, reason in report.skipped:
            print(f"  {reason}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from trajemb.store import read_table

    table = read_table(Path(args.table), verify=args.verify)
    if args.json:
        print(json.dumps(table.manifest, indent=2))
        return 0
    m = table.manifest
    print(f"{args.table}: {len(table)} windows of {table.num_steps} steps, sha256 {m['content_sha256'][:16]}")
    for col in ("source", "object_type", "direction", "speed_bin", "city"):
        counts = table.meta[col].value_counts()
        print(f"  {col}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if m.get("skipped"):
        print(f"  skipped inputs: {len(m['skipped'])}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from trajemb.pipeline import run_demo

    run_demo(Path(args.cache), args.scenarios, args.seed, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trajemb", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"trajemb {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate synthetic AV2 scenarios (parquet + map JSON)")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--scenarios", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument(
        "--av2-serializer", action="store_true", help="write parquet with av2's own (slow) serializer"
    )
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("prepare", help="AV2 folders -> trajectory table (parquet)")
    p.add_argument("--av2", action="append", metavar="DIR", help="AV2 motion-forecasting folder (repeatable)")
    p.add_argument("--sensor-logs", action="append", metavar="DIR", help="AV2 sensor-log folder (repeatable)")
    p.add_argument("--out", required=True, help="table path (.parquet), written atomically")
    _add_window_flags(p)
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--skip-bad", action="store_true", help="go on past bad scenarios and report them")
    p.add_argument("--maps-dir", default=None, help="also reduce and cache the maps the windows need here")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("info", help="summarise a trajectory table")
    p.add_argument("table")
    p.add_argument("--verify", action="store_true", help="recompute the content hash")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="end-to-end pipeline on built-in synthetic data")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache folder (default .cache)")
    p.add_argument("--scenarios", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except TrajembError as exc:
        print(f"trajemb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trajemb: interrupted", file=sys.stderr)
        return 130
