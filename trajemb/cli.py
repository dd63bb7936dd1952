"""Command line of trajemb: ``trajemb <command>``. Flags map one-to-one onto the frozen config dataclasses.

Expected failures (``TrajembError``, a file system refusing a write, memory running out) print one
line and exit with status 2; anything else is a bug and keeps its traceback. SIGINT exits with 130,
SIGTERM and SIGHUP with 128 + the signal, after the same cleanup (``trajemb.interrupts``); a closed
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
from typing import TYPE_CHECKING

from trajemb import __version__
from trajemb.errors import TrajembError
from trajemb.interrupts import Terminated, raise_if_pending, signals_as_exceptions
from trajemb.schema import PAPER_FOCAL_FUTURE, WindowConfig

if TYPE_CHECKING:
    from trajemb.bundle import Bundle
    from trajemb.explore import Neighbors
    from trajemb.uniqueness import UniquenessConfig

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
    "bundle": "use a smaller --eval-corpus, --queries or --projection-sample",
}
#: Exit status of a command whose output pipe closed (128 + SIGPIPE, what a shell shows for ``head``).
EXIT_BROKEN_PIPE = 141


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

    config = SynthConfig(args.scenarios, args.seed, args.workers, args.av2_serializer, args.generator)
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
    from trajemb.store import read_table

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


def _cmd_train(args: argparse.Namespace) -> int:
    from trajemb.augment import AugmentConfig
    from trajemb.distributed import is_main_process
    from trajemb.model import EncoderConfig
    from trajemb.train import TrainConfig, train

    encoder = EncoderConfig(
        embedding_dim=args.embedding_dim,
        d_model=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        ff_mult=args.ff_mult,
        dropout=args.dropout,
        input_dropout=args.input_dropout,
        normalize=not args.no_normalize,
        linear_base=args.linear_base,
    )
    config = TrainConfig(
        encoder=encoder,
        similarity=args.similarity,
        shape_weight=args.shape_weight,
        threshold=args.threshold,
        positive_fraction=args.positive_fraction,
        mining=args.mining,
        margin=args.margin,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_fraction=args.warmup,
        grad_clip=args.grad_clip,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        val_k=args.val_k,
        seed=args.seed,
        device=args.device,
        mining_scope=args.mining_scope,
        loss=args.loss,
        soft_neighbors=args.soft_neighbors,
        soft_temperature=args.soft_temperature,
        augment=AugmentConfig(args.augment_prob, args.augment_noise, args.augment_drop, args.augment_short),
        batches=args.batches,
        neighbors_per_seed=args.neighbors_per_seed,
        hard_share=args.hard_share,
        history_steps=args.history_steps,
        history_targets=args.history_targets,
        linear_base_training=args.linear_base_training,
    )
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


def _cmd_bundle(args: argparse.Namespace) -> int:
    from trajemb.bundle_build import BundleConfig, build_bundle
    from trajemb.evaluate import EvalConfig
    from trajemb.index import IndexSpec
    from trajemb.projection import ProjectionConfig

    config = BundleConfig(
        index=IndexSpec(
            kind=args.index,
            nprobe=args.nprobe,
            target_recall=args.target_recall,
            exact_max_rows=args.exact_max_rows,
        ),
        evaluation=EvalConfig(
            num_queries=args.queries,
            seed=args.seed,
            max_corpus=args.eval_corpus,
            one_per_track=args.one_per_track,
            exclude_scenario=args.exclude_scenario_eval,
            mean_rank=not args.no_mean_rank,
            mean_rank_corpus=args.mean_rank_corpus,
            robustness=args.robustness,
            robustness_queries=args.robustness_queries,
            robustness_corpus=args.robustness_corpus,
            encoder_missing=args.encoder_missing,
        ),
        projection=ProjectionConfig(
            method="none" if args.no_umap else args.projection,
            sample_size=args.projection_sample,
            seed=None if args.projection_unseeded else args.seed,
        ),
        evaluate=not args.no_eval,
        device=args.device,
        seed=args.seed,
        engine=args.engine,
        ray_address=args.ray_address,
        uniqueness=_uniqueness_config(args),
    )
    maps = Path(args.maps) if args.maps else None
    manifest = build_bundle(
        Path(args.table), [Path(c) for c in args.checkpoint], Path(args.out), maps, config, not args.quiet
    )
    print(
        f"wrote bundle {args.out}: {manifest['num_windows']} windows, models {', '.join(manifest['models'])} "
        f"in {manifest['build_s']:.0f} s"
    )
    return 0


def _uniqueness_config(args: argparse.Namespace) -> UniquenessConfig:
    from trajemb.uniqueness import UniquenessConfig

    return UniquenessConfig(k=args.uniqueness_k)


def _cmd_complete(args: argparse.Namespace) -> int:
    from trajemb.bundle_build import complete_bundle

    if args.parent_pid is not None:  # started by the explorer: end with it, and yield the CPU to it
        import signal

        from trajemb.workers import tie_to_parent

        tie_to_parent(args.parent_pid)
        # A terminal's Ctrl-C reaches the explorer's whole process group: the explorer decides. SIGTERM
        # and SIGHUP keep stopping it cleanly (``trajemb.interrupts``).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.nice(5)

    added = complete_bundle(Path(args.bundle), progress=not args.quiet)
    print(
        f"{args.bundle}: "
        + ("added the missing uniqueness, 2-D layouts and evaluation" if added else "already complete")
    )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from trajemb.bundle import Bundle
    from trajemb.explore import NeighborOptions, neighbor_records, search_row

    if args.draw is not None:
        return _cmd_search_drawing(args)
    bundle = Bundle(Path(args.bundle))
    model = args.model or bundle.model_names[0]
    bundle.model_entry(model)
    row = bundle.find_row(args.query)
    query_type = bundle.strings("object_type", [row])[0]
    types = args.object_types.strip()
    object_types = (
        (query_type,)
        if types == "same"
        else ()
        if types in ("any", "")
        else tuple(t.strip() for t in types.split(",") if t.strip())
    )
    known = bundle.codes("object_type")[1]
    unknown = sorted(set(object_types) - set(known))
    if unknown:
        raise TrajembError(
            f"--object-types {','.join(unknown)}: not in this bundle; its types: {', '.join(sorted(known))}"
        )
    options = NeighborOptions(
        k=args.k,
        exclude_same_track=not args.include_same_track,
        one_per_track=not args.all_windows_of_track,
        exclude_same_scenario=args.exclude_scenario,
        object_types=object_types,
        collapse_duplicates_eps=_number("--collapse-duplicates", args.collapse_duplicates),
    )
    if args.out:
        from trajemb.export import check_results_output

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
    """``trajemb search --draw``: the neighbours of a drawn path (agent frame, ``trajemb.sketch``)."""
    from trajemb.bundle import Bundle
    from trajemb.explore import NeighborOptions, neighbor_records, search_sketch, sketch_query

    bundle = Bundle(Path(args.bundle))
    model = args.model or bundle.model_names[0]
    bundle.model_entry(model)
    types = args.object_types.strip()
    object_types = () if types in ("same", "any", "") else _csv(types)
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
        from trajemb.export import check_results_output

        check_results_output(args.out, inputs=[args.bundle])
    nb = search_sketch(bundle, model, sketch, options)
    results = neighbor_records(bundle, nb)
    if args.out:
        _write_neighbors(bundle, model, nb, args.out, quiet=True, query_window_id="drawn")
    if args.json:
        print(json.dumps({"drawn": sketch.notes, "model": model, "neighbors": results}, indent=2))
        return 0
    print(f"drawn path, model {model}: " + "; ".join(sketch.notes))
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
    """``trajemb search --out``: the neighbours as a table (``trajemb.export``), format by suffix;
    ``query_window_id`` names a query that is not a bundle window (``drawn``)."""
    from trajemb.explore import neighbors_frame
    from trajemb.export import write_results

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
    from trajemb.bundle import Bundle

    bundle = Bundle(Path(bundle_path))
    name = model or bundle.model_names[0]
    bundle.model_entry(name)
    if out:
        from trajemb.export import check_results_output

        check_results_output(out, inputs=[bundle_path])
    return bundle, name


def _cmd_mine_rare(args: argparse.Namespace) -> int:
    from trajemb.explore import check_label_filters, rare_frame
    from trajemb.uniqueness import RareConfig

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
        from trajemb.export import write_results

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
    from trajemb.duplicates import DuplicatesConfig, duplication_report, find_duplicates

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
        from trajemb.duplicates import duplicate_groups
        from trajemb.explore import duplicates_frame
        from trajemb.export import write_results

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
        from trajemb.duplicates import CHECK_SAMPLE, DEFAULT_RAW_EPS_M

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
    from trajemb.bundle import Bundle
    from trajemb.report import report_table

    reports = Bundle(Path(args.bundle)).checked_reports()
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print(report_table(reports))
        _print_forecast_scores(reports)
    return 0


def _print_forecast_scores(reports: dict[str, dict[str, object]]) -> None:
    """Issue 18: the forecast scores of the bundle's history models, where it has any."""
    from trajemb.report import (
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
    from trajemb.forecast_command import ForecastCommand, run_forecast, scores_json, scores_table

    command = ForecastCommand(
        bank=args.bank,
        queries=args.queries,
        history_steps=args.history_steps,
        k=args.k,
        alignment=args.alignment,
        rerank=args.rerank,
        json=args.json,
        out=args.out,
    )
    from trajemb.report import definitions_markdown, forecast_definitions

    result = run_forecast(command, progress=not args.quiet)
    if command.json:
        print(scores_json(result), end="")
    else:
        print(scores_table(result) + "\n\n" + definitions_markdown(forecast_definitions(result.config.k)))
    return 0


def _add_forecast_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], full: bool) -> None:
    """Issue 18: ``trajemb forecast``, flags one-to-one onto ``trajemb.forecast_command.ForecastCommand``."""
    p = sub.add_parser("forecast", help="forecast windows from their histories by retrieval, scored with av2")
    if not full:
        return
    from trajemb.forecast import ALIGNMENTS
    from trajemb.forecast_command import ForecastCommand

    d = ForecastCommand(bank="-", queries="-")
    p.add_argument("--bank", required=True, help="bundle whose windows are the bank (trajemb bundle)")
    p.add_argument("--queries", required=True, help="trajectory table of query windows (trajemb prepare)")
    p.add_argument(
        "--history-steps",
        type=int,
        default=d.history_steps,
        help=f"steps of each window that are the history (default {d.history_steps})",
    )
    p.add_argument("--k", type=int, default=d.k, help=f"forecasts per query (default {d.k})")
    p.add_argument(
        "--alignment",
        choices=ALIGNMENTS,
        default=d.alignment,
        help="how retrieved futures are aligned to the query (docs/retrieval-quality.md)",
    )
    p.add_argument(
        "--rerank",
        type=int,
        default=d.rerank,
        help=f"learned retrieval: re-rank the embedding's nearest N histories by raw distance (default "
        f"{d.rerank}; 0: the embedding's K nearest as they are)",
    )
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--out", default=d.out, help="also write the scores as JSON to this file")
    p.set_defaults(func=_cmd_forecast)


def _cmd_demo(args: argparse.Namespace) -> int:
    from trajemb.pipeline import run_demo

    run_demo(Path(args.cache), args.scenarios, args.seed, progress=not args.quiet)
    return 0


def _cmd_realism(args: argparse.Namespace) -> int:
    from trajemb.realism_report import RealismConfig, realism_report, report_markdown

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


def _add_realism_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``trajemb realism``: its flags are ``RealismConfig``'s fields."""
    from trajemb.realism_report import DEFAULT_MAP_SAMPLE

    p = sub.add_parser(
        "realism", help="how far synthetic tables move from a real one (features, transfer, maps)"
    )
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
    p.set_defaults(func=_cmd_realism)


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
    p.add_argument("--scenarios", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument(
        "--av2-serializer", action="store_true", help="write parquet with av2's own (slow) serializer"
    )
    p.add_argument(
        "--generator",
        type=int,
        choices=[1, 2],
        default=2,
        help="2 (default): calibrated against real AV2 motion; 1: the generator up to trajemb 0.1.x",
    )
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("prepare", help="AV2 folders -> trajectory table (parquet)")
    p.add_argument("--av2", action="append", metavar="DIR", help="AV2 motion-forecasting folder (repeatable)")
    p.add_argument("--sensor-logs", action="append", metavar="DIR", help="AV2 sensor-log folder (repeatable)")
    p.add_argument(
        "--out", required=True, help="table path (.parquet): new or an earlier table, written atomically"
    )
    _add_window_flags(p)
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
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("info", help="summarise a trajectory table")
    p.add_argument("table")
    p.add_argument("--verify", action="store_true", help="recompute the content hash")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train an encoder with the contrastive triplet loss")
    if full("train"):
        from trajemb.losses import DEFAULT_MARGIN
        from trajemb.model import EncoderConfig
        from trajemb.train import TrainConfig

        e, t = EncoderConfig(), TrainConfig()
        p.add_argument("--data", required=True, help="trajectory table from `trajemb prepare`")
        p.add_argument("--out", required=True, help="run folder: best/, last/, metrics.csv")
        p.add_argument("--similarity", choices=["cosine", "fft"], default=t.similarity)
        p.add_argument(
            "--shape-weight", type=float, default=t.shape_weight, help="f of the Cosine similarity"
        )
        p.add_argument(
            "--threshold",
            type=float,
            default=None,
            help="positive when similarity >= this (default: calibrated to --positive-fraction)",
        )
        p.add_argument(
            "--positive-fraction",
            type=float,
            default=t.positive_fraction,
            help="share of in-batch pairs made positive when --threshold is not given",
        )
        p.add_argument("--mining", choices=["random", "hard", "semi-hard"], default=t.mining)
        p.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
        p.add_argument("--embedding-dim", type=int, default=e.embedding_dim, help="D")
        p.add_argument("--layers", type=int, default=e.num_layers)
        p.add_argument("--heads", type=int, default=e.num_heads)
        p.add_argument("--hidden", type=int, default=e.d_model, help="d_model (width)")
        p.add_argument("--ff-mult", type=int, default=e.ff_mult, help="feed-forward width / d_model")
        p.add_argument("--dropout", type=float, default=e.dropout)
        p.add_argument("--input-dropout", type=float, default=e.input_dropout)
        p.add_argument("--epochs", type=int, default=t.epochs)
        p.add_argument("--batch-size", type=int, default=t.batch_size)
        p.add_argument("--lr", type=float, default=t.lr, help="peak learning rate of the one-cycle schedule")
        p.add_argument("--weight-decay", type=float, default=t.weight_decay)
        p.add_argument(
            "--warmup", type=float, default=t.warmup_fraction, help="warm-up share of the schedule"
        )
        p.add_argument("--grad-clip", type=float, default=t.grad_clip)
        p.add_argument(
            "--val-fraction", type=float, default=t.val_fraction, help="share of scenarios held out"
        )
        p.add_argument("--val-every", type=int, default=t.val_every, help="validate every N epochs")
        p.add_argument("--val-k", type=int, default=t.val_k, help="k of validation minADE/minFDE@k")
        p.add_argument("--seed", type=int, default=t.seed)
        p.add_argument("--device", default=t.device, help="auto (cuda, then cpu), cpu, cuda, cuda:1, ...")
        p.add_argument("--resume", action="store_true", help="continue from OUT/last")
        p.add_argument(
            "--mining-scope",
            choices=["rank", "global"],
            default=t.mining_scope,
            help="under torchrun: mine in each process's batch, or in all processes' batches (all-gather)",
        )
        p.add_argument(
            "--loss",
            choices=["triplet", "soft_neighbors"],
            default=t.loss,
            help="the paper's triplet loss (default), or the soft-neighbour loss (see docs/workflow.md)",
        )
        p.add_argument(
            "--soft-neighbors",
            type=int,
            default=t.soft_neighbors,
            help="soft-neighbour loss: bandwidth = distance to this many-th nearest window in the batch",
        )
        p.add_argument(
            "--soft-temperature",
            type=float,
            default=t.soft_temperature,
            help="soft-neighbour loss: temperature of the embedding's neighbour distribution",
        )
        p.add_argument(
            "--no-normalize",
            action="store_true",
            help="embeddings keep their length (the paper's are unit vectors); for --loss soft_neighbors",
        )
        p.add_argument(
            "--augment-prob",
            type=float,
            default=t.augment.prob,
            help="share of training windows perturbed (noise, dropped steps, short) before encoding",
        )
        p.add_argument(
            "--augment-noise", type=float, default=t.augment.noise_m, help="largest position noise (m)"
        )
        p.add_argument(
            "--augment-drop", type=float, default=t.augment.drop, help="largest share of dropped steps"
        )
        p.add_argument(
            "--augment-short",
            type=float,
            default=t.augment.short_prob,
            help="share of windows of which only the first half is observed",
        )
        p.add_argument(
            "--batches",
            choices=["random", "neighborhoods"],
            default=t.batches,
            help="random batches, or neighbourhoods in raw trajectory space (see docs/workflow.md)",
        )
        p.add_argument(
            "--neighbors-per-seed",
            type=int,
            default=t.neighbors_per_seed,
            help="--batches neighborhoods: windows per neighbourhood",
        )
        p.add_argument(
            "--hard-share",
            type=float,
            default=t.hard_share,
            help="--batches neighborhoods: share of seeds from turns, U-turns and lane changes",
        )
        p.add_argument(
            "--history-steps",
            type=int,
            default=t.history_steps,
            help="a history model: read each window's first N steps in the frame of their last state "
            "(for trajemb forecast; default 0: whole windows)",
        )
        p.add_argument(
            "--history-targets",
            choices=["history", "window"],
            default=t.history_targets,
            help="with --history-steps: the loss compares the histories (default), or the whole windows "
            "in the histories' last-state frame (histories whose futures agree are pulled together)",
        )
        p.add_argument(
            "--linear-base",
            choices=["none", "pca"],
            default=e.linear_base,
            help="pca: add PCA of the training windows to the Transformer, whose output starts at zero, "
            "so training starts where PCA to D is (needs --loss soft_neighbors --no-normalize)",
        )
        p.add_argument(
            "--linear-base-training",
            choices=["fine_tune", "frozen"],
            default=t.linear_base_training,
            help="with --linear-base pca: train the linear base with the rest, or keep it at PCA",
        )
        p.set_defaults(func=_cmd_train)

    p = sub.add_parser("bundle", help="embed, index, project and evaluate a table under checkpoints")
    if full("bundle"):
        from trajemb.evaluate import EvalConfig
        from trajemb.index import EXACT_MAX_ROWS, INDEX_KINDS
        from trajemb.projection import PROJECTION_METHODS, ProjectionConfig

        p.add_argument("--table", required=True)
        p.add_argument("--checkpoint", action="append", required=True, help="checkpoint folder (repeatable)")
        p.add_argument(
            "--out", required=True, help="bundle folder (an earlier bundle there is replaced atomically)"
        )
        p.add_argument("--maps", default=None, help="reduced maps folder (`trajemb prepare --maps-dir`)")
        p.add_argument(
            "--index",
            choices=INDEX_KINDS,
            default="auto",
            help="auto (default): exact up to --exact-max-rows windows, IVF above",
        )
        p.add_argument(
            "--exact-max-rows", type=int, default=EXACT_MAX_ROWS, help="largest exact index of auto"
        )
        p.add_argument(
            "--nprobe", type=int, default=0, help="IVF cells probed (default 0: tuned to --target-recall)"
        )
        p.add_argument("--target-recall", type=float, default=0.95, help="IVF recall@10 against exact search")
        p.add_argument(
            "--projection",
            choices=PROJECTION_METHODS,
            default="auto",
            help=f"2-D layout: auto (full UMAP up to {ProjectionConfig().full_max_rows} windows, "
            "UMAP of a sample + placement above), full, sample, none",
        )
        p.add_argument(
            "--projection-sample",
            type=int,
            default=ProjectionConfig().sample_size,
            help="rows the UMAP is fitted on with --projection sample",
        )
        p.add_argument(
            "--projection-unseeded",
            action="store_true",
            help="parallel, non-reproducible UMAP (faster on many cores)",
        )
        p.add_argument("--no-umap", action="store_true", help="same as --projection none")
        p.add_argument("--queries", type=int, default=2000, help="evaluation queries")
        p.add_argument(
            "--eval-corpus",
            type=int,
            default=200_000,
            help="evaluate among at most this many windows (a seeded sample above)",
        )
        p.add_argument(
            "--no-eval", action="store_true", help="skip the evaluation (the explorer can add it later)"
        )
        ev = EvalConfig()
        p.add_argument(
            "--one-per-track",
            action="store_true",
            help="evaluation: only the nearest window of each track counts as a neighbour",
        )
        p.add_argument(
            "--exclude-scenario-eval",
            action="store_true",
            help="evaluation: no neighbours from the query's own scenario",
        )
        p.add_argument(
            "--no-mean-rank", action="store_true", help="evaluation: skip the mean rank of twin halves"
        )
        p.add_argument(
            "--mean-rank-corpus",
            type=int,
            default=ev.mean_rank_corpus,
            help="evaluation: database size of the mean rank (TrajCL: 100000)",
        )
        p.add_argument(
            "--robustness",
            action="store_true",
            help="evaluation: robustness curves (noise, dropped steps, short query, offset; minutes)",
        )
        p.add_argument("--robustness-queries", type=int, default=ev.robustness_queries)
        p.add_argument("--robustness-corpus", type=int, default=ev.robustness_corpus)
        p.add_argument(
            "--encoder-missing",
            choices=["interpolate", "mask"],
            default=ev.encoder_missing,
            help="robustness: encoders read windows with missing steps completed (as PCA) or masked",
        )
        p.add_argument(
            "--engine",
            choices=["local", "ray"],
            default="local",
            help="embed here, or on a Ray cluster (needs the [ray] extra); index, layout and "
            "evaluation stay here",
        )
        p.add_argument(
            "--ray-address", default=None, metavar="ADDR", help="with --engine ray: cluster to join"
        )
        p.add_argument("--device", default="auto")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--uniqueness-k",
            type=int,
            default=10,
            help="each window's uniqueness: distance to its k-th nearest other track (0: none)",
        )
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
    _add_realism_command(sub)

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
