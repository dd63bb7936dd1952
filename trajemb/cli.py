"""Command line of trajemb: ``trajemb <command>``. Flags map one-to-one onto the frozen config dataclasses.

Expected failures (``TrajembError``, a file system refusing a write, memory running out) print one
line and exit with status 2; anything else is a bug and keeps its traceback. SIGINT exits with 130,
SIGTERM and SIGHUP with 128 + the signal, after the same cleanup (``trajemb.core.interrupts``); a closed
output pipe (``trajemb info t | head -2``) ends the command quietly with 141, as SIGPIPE would.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from trajemb import __version__
from trajemb.cli_fields import ConfigFlags, add_config_flags, flag_message, set_field_flags
from trajemb.core.errors import ConfigError, TrajembError
from trajemb.core.interrupts import Terminated, raise_if_pending, signals_as_exceptions
from trajemb.data.schema import PAPER_FOCAL_FUTURE, WindowConfig

if TYPE_CHECKING:
    from trajemb.analysis.bundle import Bundle
    from trajemb.analysis.forecast_command import ForecastCommand
    from trajemb.serving.bundle_build import BundleConfig
    from trajemb.serving.explore import Neighbors
    from trajemb.training.train import TrainConfig

log = logging.getLogger("trajemb")

DEFAULT_CACHE = Path(".cache")
#: Operating-system errors that are the environment's, not a bug: reported as one line.
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EFBIG,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EXDEV,
    }
)
#: Errors that only writing causes: the file an error names may be the *source* of a copy
#: (``shutil.copyfile`` does so), so the message names no input.
WRITE_ONLY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: What to try when memory runs out, by command.
MEMORY_HINTS = {
    "synth": "use fewer --workers",
    "prepare": "use fewer --workers, or prepare the data in parts",
    "train": "use a smaller --batch-size, or a smaller model",
    "bundle": "use a smaller --evaluation-max-corpus, --evaluation-num-queries or --projection-sample-size",
}
#: Exit status of a command whose output pipe closed (128 + SIGPIPE, what a shell shows for ``head``).
EXIT_BROKEN_PIPE = 141


#: ``trajemb prepare``'s window flags spelled otherwise before they were named as their fields
#: (trajemb 0.1): old flag -> ``WindowConfig`` field. Hidden aliases; drop them in the next release.
WINDOW_RENAMED = {"--steps": "num_steps", "--stride": "stride_steps", "--min-speed": "min_speed_mps"}


def _add_window_flags(p: argparse.ArgumentParser) -> ConfigFlags:
    """A flag per field of ``WindowConfig``, and ``--preset``."""
    flags = add_config_flags(p, WindowConfig, renamed=WINDOW_RENAMED)
    p.add_argument(
        "--preset",
        choices=["paper"],
        default=None,
        help="paper: the focal track's 60-step future, one window per scenario (overrides window flags)",
    )
    return flags


def window_config(args: argparse.Namespace) -> WindowConfig:
    """The ``WindowConfig`` that ``trajemb prepare``'s parsed flags describe."""
    if args.preset == "paper":
        return PAPER_FOCAL_FUTURE
    return cast(WindowConfig, args.window_flags.build(args))


#: ``trajemb synth``'s flags spelled otherwise before they were named as their fields (trajemb 0.1).
SYNTH_RENAMED = {"--scenarios": "num_scenarios", "--av2-serializer": "use_av2_serializer"}


def _synth_flags(p: argparse.ArgumentParser) -> ConfigFlags:
    from trajemb.data.synth.generate import SynthConfig

    return add_config_flags(p, SynthConfig, renamed=SYNTH_RENAMED)


def _cmd_synth(args: argparse.Namespace) -> int:
    from trajemb.data.synth.generate import SynthConfig, generate

    config = cast(SynthConfig, args.config_flags.build(args))
    seconds = generate(config, Path(args.out), progress=not args.quiet)
    print(f"wrote {config.num_scenarios} scenarios to {args.out} in {seconds:.1f} s")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from trajemb.data.prepare import PrepareConfig, prepare_table

    config = PrepareConfig(
        av2_dirs=tuple(args.av2 or ()),
        sensor_log_dirs=tuple(args.sensor_logs or ()),
        window=window_config(args),
        workers=args.workers,
        skip_bad=args.skip_bad,
        maps_dir=args.maps_dir,
        engine=args.engine,
        ray_address=args.ray_address,
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
    from trajemb.data.store import read_table

    table = read_table(Path(args.table), verify=args.verify, require_full_hash=args.verify)
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


#: ``trajemb train``'s flags spelled otherwise before they were named as their fields (trajemb 0.1):
#: old flag -> field. Hidden aliases, listed in the command's help; drop them in the next release.
TRAIN_RENAMED = {
    "--hidden": "encoder.d_model",
    "--layers": "encoder.num_layers",
    "--heads": "encoder.num_heads",
    "--warmup": "warmup_fraction",
    "--augment-noise": "augment.noise_m",
    "--augment-short": "augment.short_prob",
}


def _train_flags(p: argparse.ArgumentParser) -> ConfigFlags:
    """``trajemb train``: a flag per field of ``TrainConfig`` (the encoder's fields unprefixed)."""
    from trajemb.training.train import TrainConfig

    return add_config_flags(p, TrainConfig, nested={"encoder": ""}, renamed=TRAIN_RENAMED)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` that ``trajemb train``'s parsed flags describe."""
    config = args.config_flags.build(args)
    return cast("TrainConfig", config)


def _cmd_train(args: argparse.Namespace) -> int:
    from trajemb.training.distributed import is_main_process
    from trajemb.training.train import train

    config = train_config(args)
    best = train(
        config,
        Path(args.data),
        Path(args.out),
        resume=args.resume,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    if not is_main_process():  # under torchrun, rank 0 reports
        return 0
    k = config.val_k
    ade, fde = best.get(f"val_minADE@{k}", float("nan")), best.get(f"val_minFDE@{k}", float("nan"))
    print(
        f"best epoch {int(best.get('epoch', 0))}: val minADE@{k} {ade:.3f} m, "
        f"minFDE@{k} {fde:.3f} m -> {Path(args.out) / 'best'}"
    )
    return 0


#: ``trajemb bundle``'s flags spelled otherwise before they were named as their fields (trajemb 0.1):
#: old flag -> ``BundleConfig`` field. Hidden aliases; drop them in the next release.
BUNDLE_RENAMED = {
    "--index": "index.kind",
    "--nprobe": "index.nprobe",
    "--target-recall": "index.target_recall",
    "--exact-max-rows": "index.exact_max_rows",
    "--projection": "projection.method",
    "--projection-sample": "projection.sample_size",
    "--queries": "evaluation.num_queries",
    "--eval-corpus": "evaluation.max_corpus",
    "--one-per-track": "evaluation.one_per_track",
    "--exclude-scenario-eval": "evaluation.exclude_scenario",
    "--mean-rank": "evaluation.mean_rank",
    "--mean-rank-corpus": "evaluation.mean_rank_corpus",
    "--robustness": "evaluation.robustness",
    "--robustness-queries": "evaluation.robustness_queries",
    "--robustness-corpus": "evaluation.robustness_corpus",
    "--encoder-missing": "evaluation.encoder_missing",
    "--eval": "evaluate",
}


def _bundle_flags(p: argparse.ArgumentParser) -> ConfigFlags:
    """``trajemb bundle``: a flag per field of ``BundleConfig``; ``--seed`` also seeds the evaluation and
    the layouts (their own seeds are not flags)."""
    from trajemb.serving.bundle_build import BundleConfig

    return add_config_flags(
        p, BundleConfig, skip=("evaluation.seed", "projection.seed"), renamed=BUNDLE_RENAMED
    )


def bundle_config(args: argparse.Namespace) -> BundleConfig:
    """The ``BundleConfig`` that ``trajemb bundle``'s parsed flags describe."""
    overrides: dict[str, object] = {
        "evaluation.seed": args.seed,
        "projection.seed": None if args.projection_unseeded else args.seed,
    }
    if args.no_umap:
        overrides["projection.method"] = "none"
    return cast("BundleConfig", args.config_flags.build(args, **overrides))


def _cmd_bundle(args: argparse.Namespace) -> int:
    from trajemb.serving.bundle_build import build_bundle

    config = bundle_config(args)
    maps = Path(args.maps) if args.maps else None
    manifest = build_bundle(
        Path(args.table), [Path(c) for c in args.checkpoint], Path(args.out), maps, config, not args.quiet
    )
    print(
        f"wrote bundle {args.out}: {manifest['num_windows']} windows, models {', '.join(manifest['models'])} "
        f"in {manifest['build_s']:.0f} s"
    )
    return 0


def _cmd_complete(args: argparse.Namespace) -> int:
    from trajemb.serving.bundle_build import complete_bundle

    if args.parent_pid is not None:  # started by the explorer: end with it, and yield the CPU to it
        import signal

        from trajemb.core.workers import tie_to_parent

        tie_to_parent(args.parent_pid)
        # A terminal's Ctrl-C reaches the explorer's whole process group: the explorer decides. SIGTERM
        # and SIGHUP keep stopping it cleanly (``trajemb.core.interrupts``).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.nice(5)

    added = complete_bundle(Path(args.bundle), progress=not args.quiet)
    print(
        f"{args.bundle}: "
        + ("added the missing uniqueness, 2-D layouts and evaluation" if added else "already complete")
    )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from trajemb.analysis.bundle import Bundle
    from trajemb.serving.explore import NeighborOptions, neighbor_records, search_row

    if args.draw is not None:
        return _cmd_search_drawing(args)
    bundle = Bundle(Path(args.bundle))
    model = args.model or bundle.model_names[0]
    bundle.model_entry(model)
    row = bundle.find_row(args.query)
    query_type = bundle.strings("object_type", [row])[0]
    object_types = _object_types(bundle, args.object_types, query_type)
    options = NeighborOptions(
        k=args.k,
        exclude_same_track=not args.include_same_track,
        one_per_track=not args.all_windows_of_track,
        exclude_same_scenario=args.exclude_scenario,
        object_types=object_types,
        collapse_duplicates_eps=_number("--collapse-duplicates", args.collapse_duplicates),
    )
    if args.out:
        from trajemb.analysis.export import check_results_output

        check_results_output(args.out, inputs=[args.bundle])
    nb = search_row(bundle, model, row, options)
    results = neighbor_records(bundle, nb)
    if args.out:
        _write_neighbors(bundle, model, nb, args.out, quiet=args.json)
    query = {
        "window_id": bundle.strings("window_id", [row])[0],
        "object_type": query_type,
        "direction": bundle.strings("direction", [row])[0],
    }
    if args.json:
        print(
            json.dumps(
                {
                    "query": query["window_id"],
                    "model": model,
                    "options": options.__dict__,
                    "neighbors": results,
                },
                indent=2,
                default=list,
            )
        )
        return 0
    print(
        f"query {query['window_id']} ({query['direction']}, {query['object_type']}), model {model}; "
        f"types {', '.join(object_types) or 'any'}, one window per track: {options.one_per_track}, "
        f"own scenario excluded: {options.exclude_same_scenario}"
    )
    if not results:
        print("no neighbours pass these filters")
    for r in results:
        print(
            f"{r['rank']:3d}  d={r['distance']:.3f}  ADE {r['ade_m']:6.2f} m  FDE {r['fde_m']:6.2f} m  "
            f"{r['speed_mps']:5.1f} m/s  {r['direction']:18s} {r['object_type']:12s} {r['window_id']}"
        )
    return 0


def _object_types(bundle: Bundle, text: str, query_type: str | None) -> tuple[str, ...]:
    """``trajemb search --object-types``: ``same`` (the query's type; any for a drawing, which has
    none), ``any``, or a comma-separated list of types the bundle holds (another is refused: it would
    silently leave no neighbours)."""
    types = text.strip()
    if types == "same":
        return (query_type,) if query_type else ()
    if types == "any":
        return ()
    picked = _csv(types)
    known = bundle.codes("object_type")[1]
    unknown = sorted(set(picked) - set(known))
    if unknown:
        raise TrajembError(
            f"--object-types {','.join(unknown)}: not in this bundle; its types: {', '.join(sorted(known))}"
        )
    return picked


def _drawn_points(text: str) -> list[tuple[float, float]]:
    """``--draw "x,y x,y ..."`` (metres; pairs separated by spaces or semicolons)."""
    points = []
    for pair in text.replace(";", " ").split():
        x, sep, y = pair.partition(",")
        try:
            points.append((float(x), float(y)))
        except ValueError:
            raise TrajembError(f"--draw: {pair!r:.40} is not a point x,y in metres") from None
        if not sep:
            raise TrajembError(f"--draw: {pair!r:.40} is not a point x,y in metres")
    return points


def _cmd_search_drawing(args: argparse.Namespace) -> int:
    """``trajemb search --draw``: the neighbours of a drawn path (agent frame, ``trajemb.analysis.sketch``)."""
    from trajemb.analysis.bundle import Bundle
    from trajemb.serving.explore import (
        NeighborOptions,
        neighbor_records,
        search_sketch,
        sketch_notes,
        sketch_query,
    )

    bundle = Bundle(Path(args.bundle))
    model = args.model or bundle.model_names[0]
    bundle.model_entry(model)
    object_types = _object_types(bundle, args.object_types, None)
    options = NeighborOptions(
        k=args.k,
        one_per_track=not args.all_windows_of_track,
        object_types=object_types,
        collapse_duplicates_eps=_number("--collapse-duplicates", args.collapse_duplicates),
    )
    sketch = sketch_query(
        bundle,
        _drawn_points(args.draw),
        speed_mps=_number("--speed", args.speed),
        duration_s=_number("--duration", args.duration),
    )
    if args.out:
        from trajemb.analysis.export import check_results_output

        check_results_output(args.out, inputs=[args.bundle])
    nb = search_sketch(bundle, model, sketch, options)
    notes = list(sketch_notes(bundle, model, sketch))
    results = neighbor_records(bundle, nb)
    if args.out:
        _write_neighbors(bundle, model, nb, args.out, quiet=True, query_window_id="drawn")
    if args.json:
        print(json.dumps({"drawn": notes, "model": model, "neighbors": results}, indent=2))
        return 0
    print(f"drawn path, model {model}: " + "; ".join(notes))
    if not results:
        print("no neighbours pass these filters")
    for r in results:
        print(
            f"{r['rank']:3d}  d={r['distance']:.3f}  ADE {r['ade_m']:6.2f} m  FDE {r['fde_m']:6.2f} m  "
            f"{r['speed_mps']:5.1f} m/s  {r['direction']:18s} {r['object_type']:12s} {r['window_id']}"
        )
    if args.out:
        print(f"wrote {len(nb)} neighbours to {args.out}")
    return 0


def _number(flag: str, text: str | None) -> float | None:
    """A flag's value as a number (None where it was not given); anything else is one line."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise TrajembError(f"{flag} must be a number, got {text!r:.40}") from None


def _write_neighbors(
    bundle: Bundle, model: str, nb: Neighbors, out: str, quiet: bool, query_window_id: str = ""
) -> None:
    """``trajemb search --out``: the neighbours as a table (``trajemb.analysis.export``), format by suffix;
    ``query_window_id`` names a query that is not a bundle window (``drawn``)."""
    from trajemb.analysis.export import write_results
    from trajemb.serving.explore import neighbors_frame

    path = write_results(neighbors_frame(bundle, model, nb, query_window_id), out, inputs=[bundle.root])
    if not quiet:
        print(f"wrote {len(nb)} neighbours to {path}")


# -- trajemb mine (issue 17) ---------------------------------------------------------------------------
def _label_filters(items: list[str] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``--label COLUMN=A,B`` (repeatable) -> ((column, values), ...)."""
    out = []
    for item in items or ():
        column, sep, values = item.partition("=")
        if not sep:
            raise TrajembError(f"--label {item!r:.60}: give COLUMN=VALUE[,VALUE...], e.g. direction=u_turn")
        out.append((column.strip(), tuple(v.strip() for v in values.split(",") if v.strip())))
    return tuple(out)


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def _open_for_mining(bundle_path: str, model: str | None, out: str | None) -> tuple[Bundle, str]:
    """The bundle and model a mine command reads; ``--out`` checked before any work."""
    from trajemb.analysis.bundle import Bundle

    bundle = Bundle(Path(bundle_path))
    name = model or bundle.model_names[0]
    bundle.model_entry(name)
    if out:
        from trajemb.analysis.export import check_results_output

        check_results_output(out, inputs=[bundle_path])
    return bundle, name


def _cmd_mine_rare(args: argparse.Namespace) -> int:
    from trajemb.analysis.uniqueness import RareConfig
    from trajemb.serving.explore import check_label_filters, rare_frame

    config = RareConfig(
        bundle=args.bundle,
        model=args.model,
        top=args.top,
        out=args.out,
        object_types=_csv(args.object_types),
        cities=_csv(args.city),
        labels=_label_filters(args.label),
        all_windows_of_track=args.all_windows_of_track,
    )
    bundle, model = _open_for_mining(config.bundle, config.model, config.out)
    check_label_filters(bundle, config.filters)
    info = bundle.uniqueness_info(model)
    frame = rare_frame(bundle, model, config.top, config.filters, not config.all_windows_of_track)
    how = (
        f"k = {info['k']}, {'exact' if info['exact'] else 'approximate'} {info['index']} search"
        if info
        else "computed now: this bundle stores none (`trajemb complete` adds it)"
    )
    if config.out:
        from trajemb.analysis.export import write_results

        path = write_results(frame, config.out, inputs=[config.bundle])
        print(f"wrote the {len(frame)} most unique windows under {model} to {path} (uniqueness {how})")
        return 0
    print(
        f"the {len(frame)} most unique windows under {model} (uniqueness: distance to the k-th other track; {how})"
    )
    for r in frame.itertuples():
        print(
            f"{r.rank:4d}  u={r.uniqueness:.4f}  {r.mean_speed_mps:5.1f} m/s  {r.direction:18s} "
            f"{r.object_type:12s} {r.window_id}"
        )
    return 0


def _cmd_mine_duplicates(args: argparse.Namespace) -> int:
    from trajemb.analysis.duplicates import DuplicatesConfig, duplication_report, find_duplicates

    eps = _number("--eps", args.eps)
    assert eps is not None  # a required flag
    config = DuplicatesConfig(
        bundle=args.bundle,
        eps=eps,
        model=args.model,
        out=args.out,
        space=args.space,
        by_track=args.by_track,
        report_eps=tuple(float(_number("--report-eps", e) or 0.0) for e in _csv(args.report_eps)),
        raw_eps_m=float(_number("--raw-eps-m", args.raw_eps_m) or 0.0),
        check_sample=args.check_sample,
    )
    bundle, model = _open_for_mining(config.bundle, config.model, config.out)
    pairs = find_duplicates(bundle, model, max(config.thresholds), config.space, progress=not args.quiet)
    report = duplication_report(
        bundle,
        model,
        config.thresholds,
        config.space,
        config.raw_eps_m,
        config.check_sample if config.space == "model" else 0,
        config.by_track,
        pairs,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_duplication(report, config.raw_eps_m)
    if config.out:
        from trajemb.analysis.duplicates import duplicate_groups
        from trajemb.analysis.export import write_results
        from trajemb.serving.explore import duplicates_frame

        groups = duplicate_groups(pairs.below(config.eps), bundle.groups, config.by_track)
        frame = duplicates_frame(bundle, model, config.eps, config.space, config.by_track, groups)
        path = write_results(frame, config.out, inputs=[config.bundle])
        if not args.json:
            print(f"wrote {groups.num_groups} groups ({len(frame)} windows) at eps {config.eps:g} to {path}")
    return 0


def _print_duplication(report: dict[str, object], raw_eps_m: float) -> None:
    levels = report["levels"]
    assert isinstance(levels, list)
    unit = "m RMS" if report["space"] == "raw" else f"in the space of {report['model']}"
    print(
        f"near-duplicates among {report['windows']} windows ({unit}; "
        f"{'exact' if report['exact'] else 'approximate'} search, {report['search_s']:.1f} s)"
    )
    for lv in levels:
        line = (
            f"  eps {lv['eps']:<8g} {lv['windows']:>9} windows ({100 * lv['share']:5.2f} %) in "
            f"{lv['groups']} groups of {lv['tracks']} tracks, largest {lv['largest_group']}"
        )
        check = lv.get("raw_check")
        if check:
            line += f"; raw space ({raw_eps_m:g} m RMS): {_share(check.get('confirmed_share'))} of its pairs"
            if check.get("raw_pairs"):
                line += (
                    f", it finds {_share(check['found_share'])} of the raw pairs of "
                    f"{check['sample_windows']} sampled windows"
                )
        print(line)


def _share(value: object) -> str:
    return f"{100 * value:.0f} %" if isinstance(value, float) else "-"


def _add_mine_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], full: bool) -> None:
    """``trajemb mine rare|duplicates`` (issue 17)."""
    mine = sub.add_parser("mine", help="the rarest windows and near-duplicate groups of a bundle")
    kinds = mine.add_subparsers(dest="mine_command", required=True)
    p = kinds.add_parser("rare", help="the most unique windows (distance to the k-th nearest other track)")
    if full:
        p.add_argument("--bundle", required=True)
        p.add_argument("--model", default=None, help="model name (default: the first)")
        p.add_argument("--top", type=int, default=100, help="how many windows (default 100)")
        p.add_argument(
            "--out", default=None, help="write the list here (.csv or .parquet); default: print it"
        )
        p.add_argument("--object-types", default=None, help="only these object types (comma-separated)")
        p.add_argument("--city", default=None, help="only these cities (comma-separated)")
        p.add_argument(
            "--label",
            action="append",
            metavar="COLUMN=A,B",
            help="only windows with these labels, e.g. direction=u_turn,left (repeatable)",
        )
        p.add_argument(
            "--all-windows-of-track", action="store_true", help="list several windows of one track"
        )
    p.set_defaults(func=_cmd_mine_rare)
    p = kinds.add_parser("duplicates", help="near-duplicate windows of different tracks, grouped")
    if full:
        from trajemb.analysis.duplicates import CHECK_SAMPLE, DEFAULT_RAW_EPS_M

        p.add_argument("--bundle", required=True)
        p.add_argument("--model", default=None, help="model name (default: the first)")
        p.add_argument(
            "--eps", required=True, help="closer than this: embedding distance (--space raw: metres RMS)"
        )
        p.add_argument("--out", default=None, help="write the groups and their members here (.csv/.parquet)")
        p.add_argument("--space", choices=["model", "raw"], default="model")
        p.add_argument("--by-track", action="store_true", help="group tracks (any of their windows alike)")
        p.add_argument(
            "--report-eps", default=None, help="thresholds of the report (default: eps/4, eps/2, eps, 2 eps)"
        )
        p.add_argument(
            "--raw-eps-m", default=str(DEFAULT_RAW_EPS_M), help="raw-space threshold of the check (m RMS)"
        )
        p.add_argument(
            "--check-sample",
            type=int,
            default=CHECK_SAMPLE,
            help="windows sampled for the raw check (0: none)",
        )
        p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_mine_duplicates)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from trajemb.analysis.bundle import Bundle
    from trajemb.analysis.report import report_table

    reports = Bundle(Path(args.bundle)).checked_reports()
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print(report_table(reports))
        _print_forecast_scores(reports)
    return 0


def _print_forecast_scores(reports: dict[str, dict[str, object]]) -> None:
    """Issue 18: the forecast scores of the bundle's history models, where it has any."""
    from trajemb.analysis.report import (
        definitions_markdown,
        forecast_definitions,
        forecast_frame,
        forecast_scores_table,
    )

    frame = forecast_frame(reports)
    if not frame.empty:
        print("\nForecasting by retrieval (the bundle's own windows, leave one scenario out):\n")
        print(forecast_scores_table(reports))
        print()
        print(definitions_markdown(forecast_definitions(int(frame["k"].iloc[0]))))


def _cmd_forecast(args: argparse.Namespace) -> int:
    from trajemb.analysis.forecast_command import run_forecast, scores_json, scores_table

    command = cast("ForecastCommand", args.config_flags.build(args))
    from trajemb.analysis.report import definitions_markdown, forecast_definitions

    result = run_forecast(command, progress=not args.quiet)
    if command.json:
        print(scores_json(result), end="")
    else:
        print(scores_table(result) + "\n\n" + definitions_markdown(forecast_definitions(result.config.k)))
    return 0


def _add_forecast_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], full: bool) -> None:
    """Issue 18: ``trajemb forecast``, flags one-to-one onto ``trajemb.analysis.forecast_command.ForecastCommand``."""
    p = sub.add_parser("forecast", help="forecast windows from their histories by retrieval, scored with av2")
    if not full:
        return
    from trajemb.analysis.forecast_command import ForecastCommand

    flags = add_config_flags(p, ForecastCommand)
    set_field_flags(p, flags)
    p.set_defaults(config_flags=flags)
    p.set_defaults(func=_cmd_forecast)


def _cmd_demo(args: argparse.Namespace) -> int:
    from trajemb.serving.pipeline import run_demo

    run_demo(Path(args.cache), args.scenarios, args.seed, progress=not args.quiet)
    return 0


def _cmd_realism(args: argparse.Namespace) -> int:
    from trajemb.analysis.realism_report import RealismConfig, realism_report, report_markdown

    config = RealismConfig(
        synthetic=tuple(args.synthetic),
        real=args.real,
        real_bank=args.real_bank,
        out=args.out,
        object_types=tuple(t.strip() for t in args.object_types.split(",") if t.strip()),
        transfer=not args.no_transfer,
        maps=not args.no_maps,
        map_sample=args.map_sample,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    report = realism_report(config, progress=not args.quiet)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report_markdown(report))
    return 0


def _add_realism_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], full: bool) -> None:
    """``trajemb realism``: its flags are ``RealismConfig``'s fields."""
    p = sub.add_parser(
        "realism", help="how far synthetic tables move from a real one (features, transfer, maps)"
    )
    p.set_defaults(func=_cmd_realism)
    if not full:  # realism's modules (scipy.signal) take most of a second to import
        return
    from trajemb.analysis.realism_report import DEFAULT_MAP_SAMPLE

    p.add_argument(
        "--synthetic",
        action="append",
        required=True,
        metavar="[NAME=]TABLE",
        help="synthetic trajectory table (repeatable: generators side by side)",
    )
    p.add_argument(
        "--real", required=True, metavar="TABLE", help="real trajectory table (queries of the transfer test)"
    )
    p.add_argument(
        "--real-bank",
        default=None,
        metavar="TABLE",
        help="real table of the transfer test's real bank (default: --real)",
    )
    p.add_argument(
        "--out", default=None, help="folder for realism.json, realism.md and histograms (replaced atomically)"
    )
    p.add_argument(
        "--object-types",
        default="",
        help="comma-separated object types (default: those moving in the real table)",
    )
    p.add_argument("--no-transfer", action="store_true", help="skip the transfer test")
    p.add_argument("--no-maps", action="store_true", help="skip the map check")
    p.add_argument("--map-sample", type=int, default=DEFAULT_MAP_SAMPLE, help="most maps checked per table")
    p.add_argument(
        "--bootstrap", type=int, default=20, help="bootstrap resamples of the real noise floor (0: none)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, the other commands' options are left out (their defaults import
    torch, and ``trajemb search`` must start in a fraction of a second)."""

    def full(command: str) -> bool:
        return only is None or only == command

    parser = argparse.ArgumentParser(prog="trajemb", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"trajemb {__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or progress messages (warnings stay)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate synthetic AV2 scenarios (parquet + map JSON)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder: new, empty, or an earlier synth output (replaced atomically)",
    )
    if full("synth"):  # the generator's modules take a third of a second to import
        flags = _synth_flags(p)
        set_field_flags(p, flags)
        p.set_defaults(config_flags=flags)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("prepare", help="AV2 folders -> trajectory table (parquet)")
    p.add_argument("--av2", action="append", metavar="DIR", help="AV2 motion-forecasting folder (repeatable)")
    p.add_argument("--sensor-logs", action="append", metavar="DIR", help="AV2 sensor-log folder (repeatable)")
    p.add_argument(
        "--out", required=True, help="table path (.parquet): new or an earlier table, written atomically"
    )
    window_flags = _add_window_flags(p)
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--skip-bad", action="store_true", help="go on past bad scenarios and report them")
    p.add_argument("--maps-dir", default=None, help="also reduce and cache the maps the windows need here")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local process pool, or Ray Data tasks (needs the [ray] extra); same table either way",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --engine ray: cluster to join, e.g. 10.0.0.1:6379 (default: RAY_ADDRESS, else local)",
    )
    set_field_flags(p, window_flags)
    p.set_defaults(func=_cmd_prepare, window_flags=window_flags)

    p = sub.add_parser("info", help="summarise a trajectory table")
    p.add_argument("table")
    p.add_argument("--verify", action="store_true", help="recompute the content hash")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train an encoder with the contrastive triplet loss")
    if full("train"):
        p.add_argument("--data", required=True, help="trajectory table from `trajemb prepare`")
        p.add_argument("--out", required=True, help="run folder: best/, last/, metrics.csv")
        p.add_argument("--resume", action="store_true", help="continue from OUT/last")
        flags = _train_flags(p)
        set_field_flags(p, flags)
        p.set_defaults(func=_cmd_train, config_flags=flags)

    p = sub.add_parser("bundle", help="embed, index, project and evaluate a table under checkpoints")
    if full("bundle"):
        p.add_argument("--table", required=True)
        p.add_argument("--checkpoint", action="append", required=True, help="checkpoint folder (repeatable)")
        p.add_argument(
            "--out", required=True, help="bundle folder (an earlier bundle there is replaced atomically)"
        )
        p.add_argument("--maps", default=None, help="reduced maps folder (`trajemb prepare --maps-dir`)")
        p.add_argument(
            "--projection-unseeded",
            action="store_true",
            help="parallel, non-reproducible UMAP (faster on many cores)",
        )
        p.add_argument("--no-umap", action="store_true", help="same as --projection-method none")
        flags = _bundle_flags(p)
        set_field_flags(p, flags)
        p.set_defaults(config_flags=flags)
        p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser("complete", help="add the 2-D layouts and evaluation a bundle lacks (in place)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_complete)

    p = sub.add_parser("search", help="nearest neighbours of a window in a bundle")
    if full("search"):
        p.add_argument("--bundle", required=True)
        p.add_argument("--model", default=None, help="model name (default: the first)")
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--query", help="window id (source/scenario/track/start), or scenario/track for its first window"
        )
        which.add_argument(
            "--draw",
            metavar="'X,Y X,Y ...'",
            help="a drawn path in metres, agent frame (start at 0,0 heading +x), as the query",
        )
        p.add_argument("--speed", default=None, help="--draw: speed along the path, m/s")
        p.add_argument("--duration", default=None, help="--draw: seconds the drawn path takes")
        p.add_argument("--k", type=int, default=10)
        p.add_argument(
            "--object-types",
            default="same",
            help="neighbour object types: same (the query's, default), any, or a comma-separated list",
        )
        p.add_argument(
            "--all-windows-of-track",
            action="store_true",
            help="allow several windows of one track (default: only the nearest of each)",
        )
        p.add_argument(
            "--exclude-scenario", action="store_true", help="no neighbours from the query's scenario"
        )
        p.add_argument(
            "--include-same-track", action="store_true", help="allow windows of the query's own track"
        )
        p.add_argument("--json", action="store_true")
        p.add_argument("--out", default=None, help="also write the neighbours as a table (.csv or .parquet)")
        p.add_argument(
            "--collapse-duplicates",
            default=None,
            metavar="EPS",
            help="near-duplicates answer once: leave out windows within EPS of a nearer result",
        )
        p.set_defaults(func=_cmd_search)
    _add_mine_parser(sub, full("mine"))

    p = sub.add_parser("evaluate", help="print a bundle's evaluation reports and baselines")
    p.add_argument("--bundle", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    _add_forecast_parser(sub, full("forecast"))
    _add_realism_command(sub, full("realism"))

    p = sub.add_parser("demo", help="end-to-end pipeline on built-in synthetic data")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache folder (default .cache)")
    p.add_argument("--scenarios", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    _add_overwrite_flag(sub.choices["train"])
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def _add_overwrite_flag(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="start the run in OUT afresh, removing its checkpoints and metrics (see --resume)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    args = build_parser(
        only=command
        if command
        in {"search", "info", "evaluate", "bundle", "prepare", "synth", "mine", "forecast", "realism"}
        else None
    ).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it narrates its CPU-feature probing
    try:
        with signals_as_exceptions():
            status = int(args.func(args))
            # A signal whose exception was swallowed on the way (inside compiled code's callbacks) still
            # ends the command with 128 + signal, never with success.
            raise_if_pending()
            sys.stdout.flush()  # a closed pipe shows up here, inside the handlers below
            return status
    except ConfigError as exc:
        return _error(flag_message(str(exc), exc.fields, args))
    except TrajembError as exc:
        return _error(str(exc))
    except BrokenPipeError:
        # The reader went away (``| head``): nothing left to say. Later writes (the interpreter's final
        # flush) go to /dev/null instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        if exc.errno in WRITE_ONLY_ERRNOS:
            target = f" while writing {exc.filename2}" if exc.filename2 else ""
            return _error(f"{exc.strerror}{target}; free some space or choose another --out")
        if exc.errno == errno.ENAMETOOLONG:
            name = str(exc.filename or "")
            shown = f"{name[:80]!r}... " if len(name) > 80 else f"{name!r} " if name else ""
            return _error(
                f"{shown}has a name too long for the file system (at most 255 bytes); choose a shorter one"
            )
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror}")
    except MemoryError:
        hint = MEMORY_HINTS.get(str(args.command))
        return _error(
            "out of memory: the data (or a size written in an input file) is too large for this machine"
            + (f"; {hint}" if hint else "")
        )
    except KeyboardInterrupt:
        print("trajemb: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"trajemb: {exc}", file=sys.stderr)
        return 128 + exc.signum


def _error(message: str) -> int:
    """Print ``message`` as the one line an expected failure gets (newlines from data folded)."""
    print(f"trajemb: error: {' '.join(message.split())}", file=sys.stderr)
    return 2
