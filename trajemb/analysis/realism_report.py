"""``trajemb realism``: how far synthetic tables move from a real one, per object type and feature, by
transfer, and how real their maps are.

* **Features** (``trajemb.analysis.realism``): per object type, every feature's samples in the real table and in
  each synthetic table (several: generators side by side), their Wasserstein-1 distance in units of the
  real standard deviation and KS statistic, and the **noise floor**: the median distance between the
  real sample and bootstrap resamples of its own tracks (``bootstrap`` of them). The fixtures are
  small: a distance near the floor is as close as the real sample can tell.
* **Transfer** (``trajemb.analysis.realism_transfer``): the futures of each synthetic table as a forecasting bank
  for the real windows, against a real bank that leaves the query's scenario out.
* **Maps** (``trajemb.data.map_check``): the maps each table's windows come from, found through the input
  folders its manifest records, checked through av2's map API.

Outputs (``out``): ``realism.json`` (everything, and the marker that makes the folder one trajemb may
replace), ``realism.md`` (the tables as printed) and ``realism_<type>.png`` (overlaid histograms per
feature), written atomically.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from trajemb.analysis.realism import (
    FEATURES,
    FeatureDistance,
    feature_distance,
    feature_samples,
    moving_windows,
)
from trajemb.core.atomic import atomic_dir
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.outputs import REALISM_KIND, REALISM_MARKER, check_output_dir
from trajemb.core.validate import check_int, check_seed
from trajemb.data.map_check import MEASURES, check_map, summarize
from trajemb.data.schema import OBJECT_TYPES, STEP_S, FloatArray
from trajemb.data.store import TrajectoryTable, read_table

log = logging.getLogger(__name__)

#: Most maps checked per table (a seeded sample above): av2 parses a map in about 0.1 s.
DEFAULT_MAP_SAMPLE = 40
MAX_SYNTHETIC_TABLES = 8
REAL = "real"


@dataclass(frozen=True)
class RealismConfig:
    """``trajemb realism``'s inputs and options.

    ``synthetic``: tables as ``PATH`` or ``NAME=PATH`` (name: the file's stem); ``real_bank``: the real
    table whose windows make the transfer test's real bank (default: ``real`` itself);
    ``object_types``: empty = every type the real table has moving windows of.
    """

    synthetic: tuple[str, ...]
    real: str
    real_bank: str | None = None
    out: str | None = None
    object_types: tuple[str, ...] = ()
    transfer: bool = True
    maps: bool = True
    map_sample: int = DEFAULT_MAP_SAMPLE
    bootstrap: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.synthetic:
            raise ConfigError("give at least one --synthetic table")
        if len(self.synthetic) > MAX_SYNTHETIC_TABLES:
            raise ConfigError(f"at most {MAX_SYNTHETIC_TABLES} --synthetic tables, got {len(self.synthetic)}")
        names = [name for name, _ in self.synthetic_tables]
        if len(set(names)) != len(names) or REAL in names:
            raise ConfigError(
                f"--synthetic tables need distinct names other than {REAL!r} (give NAME=PATH), got {names}"
            )
        if not str(self.real).strip():
            raise ConfigError("--real must name a table")
        unknown = [t for t in self.object_types if t not in OBJECT_TYPES]
        if unknown:
            raise ConfigError(
                f"unknown object type(s) {', '.join(map(repr, unknown))}; known: {', '.join(OBJECT_TYPES)}"
            )
        check_int("--map-sample", self.map_sample, 1, 100_000)
        check_int("--bootstrap", self.bootstrap, 0, 1000)
        check_seed("--seed", self.seed)

    @property
    def synthetic_tables(self) -> list[tuple[str, str]]:
        """(name, path) of each synthetic table."""
        out = []
        for given in self.synthetic:
            name, sep, path = given.partition("=")
            if not sep:
                name, path = Path(given).stem, given
            if not name.strip() or not path.strip():
                raise ConfigError(f"--synthetic {given!r}: expected PATH or NAME=PATH")
            out.append((name, path))
        return out


@dataclass(frozen=True)
class Windows:
    """The moving windows of one object type in one table."""

    xy: FloatArray  # (N, T, 2) agent frame
    track: np.ndarray  # (N,) int
    start_step: np.ndarray  # (N,) int
    scenario: np.ndarray  # (N,) str, source/scenario_id


def step_rate_hz(table: TrajectoryTable) -> float:
    """The table's step rate (10 Hz unless its window config records another)."""
    window = table.manifest.get("window_config")
    value = window.get("step_hz") if isinstance(window, dict) else None
    if value is None:
        return 1.0 / STEP_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise DataError(f"window config has an invalid step rate {value!r:.40}")
    return float(value)


def moving_of_type(table: TrajectoryTable, object_type: str) -> Windows:
    meta = table.meta
    keys = (meta["source"] + "/" + meta["scenario_id"]).to_numpy(dtype=str)
    select = (meta["object_type"] == object_type).to_numpy()
    xy = np.asarray(table.xy_agent[select], dtype=np.float64)
    track = table.track_groups()[select]
    start = meta["start_timestep"].to_numpy()[select]
    moving = moving_windows(xy) if len(xy) else np.zeros(0, dtype=bool)
    return Windows(xy[moving], track[moving], start[moving], keys[select][moving])


def check_tables(real: TrajectoryTable, synthetic: dict[str, TrajectoryTable], real_path: str) -> None:
    """Same step count and rate everywhere; a real table with windows.

    Raises:
        DataError: one line naming the table and what differs.
    """
    if len(real) == 0:
        raise DataError(f"{real_path}: the real table holds no windows")
    for name, table in synthetic.items():
        if table.num_steps != real.num_steps:
            raise DataError(
                f"synthetic table {name} has {table.num_steps}-step windows, the real table {real.num_steps}: "
                "prepare both with the same --steps"
            )
        if step_rate_hz(table) != step_rate_hz(real):
            raise DataError(
                f"synthetic table {name} is at {step_rate_hz(table):g} Hz, the real table at "
                f"{step_rate_hz(real):g} Hz: prepare both at the same step rate"
            )
        if len(table) == 0:
            raise DataError(f"synthetic table {name} holds no windows")


def _floor(real: Windows, samples: dict[str, FloatArray], rounds: int, seed: int) -> dict[str, float]:
    """Median distance (W1 over std) between the real samples and bootstrap resamples of its tracks."""
    if rounds == 0:
        return {f.name: float("nan") for f in FEATURES}
    rng = np.random.default_rng(seed)
    tracks, inverse = np.unique(real.track, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(len(tracks))]
    values: dict[str, list[float]] = {f.name: [] for f in FEATURES}
    for _ in range(rounds):
        pick = rng.integers(0, len(tracks), len(tracks))
        rows = np.concatenate([rows_of[i] for i in pick])
        # Resampled copies of one track are distinct tracks.
        track = np.concatenate([np.full(len(rows_of[i]), j) for j, i in enumerate(pick)])
        resampled = feature_samples(real.xy[rows], track, real.start_step[rows])
        for name, x in resampled.items():
            values[name].append(feature_distance(samples[name], x).w1_over_std)
    return {
        name: float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan") for name, v in values.items()
    }


def _distance_dict(d: FeatureDistance) -> dict[str, Any]:
    return {
        "samples": d.n_synthetic,
        "w1_over_std": _num(d.w1_over_std),
        "ks": _num(d.ks),
        "quantiles": [_num(q) for q in d.synthetic_quantiles],
    }


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float):
        return _num(value)
    return value


def _num(x: float) -> float | None:
    """JSON has no NaN: missing values are null."""
    return None if not math.isfinite(x) else float(x)


@dataclass
class RealismReport:
    """Everything ``trajemb realism`` measured (``as_dict`` is ``realism.json``)."""

    config: RealismConfig
    tables: dict[str, Any]
    features: dict[str, dict[str, Any]]
    transfer: dict[str, Any] | None
    maps: dict[str, Any] | None
    samples: dict[str, dict[str, dict[str, FloatArray]]] = field(repr=False)  # type -> table -> feature

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": REALISM_KIND,
            "config": asdict(self.config),
            "tables": self.tables,
            "features": self.features,
            "transfer": self.transfer,
            "maps": self.maps,
        }


def realism_report(config: RealismConfig, progress: bool = True) -> RealismReport:
    """Measure (module docstring); writes ``config.out`` when given.

    Raises:
        DataError: unreadable tables; tables of different step counts or rates; an empty real table; a
            type without moving windows in a table; an ``out`` trajemb may not write.
    """
    inputs = [config.real, *(p for _, p in config.synthetic_tables)]
    if config.real_bank:
        inputs.append(config.real_bank)
    if config.out is not None:
        check_output_dir(config.out, "realism", inputs)
    real = read_table(Path(config.real))
    synthetic = {name: read_table(Path(path)) for name, path in config.synthetic_tables}
    check_tables(real, synthetic, config.real)
    bank = read_table(Path(config.real_bank)) if config.real_bank else real
    if config.real_bank:
        check_tables(real, {"real bank": bank}, config.real)
    types = list(config.object_types) or sorted(
        t for t in set(real.meta["object_type"]) if len(moving_of_type(real, t).xy)
    )
    if not types:
        raise DataError(f"{config.real}: the real table has no moving windows (net speed >= 1 m/s)")
    windows: dict[str, dict[str, Windows]] = {}
    for t in types:
        windows[t] = {REAL: moving_of_type(real, t)}
        windows[t].update({name: moving_of_type(table, t) for name, table in synthetic.items()})
        for name, w in windows[t].items():
            if len(w.xy) == 0:
                where = config.real if name == REAL else f"synthetic table {name}"
                raise DataError(
                    f"{where} has no moving windows of type {t!r}; choose --object-types among the types both have"
                )
    features: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, dict[str, FloatArray]]] = {}
    bar = tqdm(total=len(types), desc="features", unit="type", disable=not progress)
    for t in types:
        samples[t] = {name: feature_samples(w.xy, w.track, w.start_step) for name, w in windows[t].items()}
        floor = _floor(windows[t][REAL], samples[t][REAL], config.bootstrap, config.seed)
        features[t] = {}
        for f in FEATURES:
            real_x = samples[t][REAL][f.name]
            entry: dict[str, Any] = {
                "unit": f.unit,
                "level": f.level,
                "real": {
                    "samples": len(real_x),
                    "quantiles": [_num(q) for q in feature_distance(real_x, real_x).real_quantiles],
                },
                "noise_floor_w1": _num(floor[f.name]),
            }
            for name in synthetic:
                entry[name] = _distance_dict(feature_distance(real_x, samples[t][name][f.name]))
            features[t][f.name] = entry
        bar.update()
    bar.close()
    tables = {
        REAL: {
            "path": config.real,
            "windows": len(real),
            "moving": {t: len(windows[t][REAL].xy) for t in types},
        },
        **{
            name: {
                "path": path,
                "windows": len(synthetic[name]),
                "moving": {t: len(windows[t][name].xy) for t in types},
            }
            for name, path in config.synthetic_tables
        },
    }
    transfer = None
    if config.transfer:
        from trajemb.analysis.realism_transfer import REAL_BANK, transfer_test

        bank_files = {REAL_BANK: config.real_bank or config.real, **dict(config.synthetic_tables)}
        transfer = _finite(transfer_test(real, bank, synthetic, progress=progress, where=bank_files))
    maps = map_checks({REAL: real, **synthetic}, config) if config.maps else None
    report = RealismReport(config, tables, features, transfer, maps, samples)
    if config.out is not None:
        write_report(report, Path(config.out))
    return report


def map_files(table: TrajectoryTable) -> tuple[list[Path], list[str]]:
    """The map files of a table's windows, found below the input folders its manifest records (relative
    paths as given to ``trajemb prepare``, from the current folder); and the folders that are gone."""
    from trajemb.data.av2_motion import find_scenario_files, map_path_for
    from trajemb.data.av2_sensor import find_sensor_logs, sensor_log_map_path

    inputs = table.manifest.get("inputs")
    if not isinstance(inputs, dict):
        return [], []
    keys = set(table.meta["map_key"].astype(str))
    found: dict[str, Path] = {}
    missing: list[str] = []
    for root in inputs.get("av2", []) or []:
        if not Path(str(root)).is_dir():
            missing.append(str(root))
            continue
        for scenario in find_scenario_files(Path(str(root))):
            key = scenario.stem.removeprefix("scenario_")
            if key in keys:
                found.setdefault(key, map_path_for(scenario))
    for root in inputs.get("sensor_logs", []) or []:
        if not Path(str(root)).is_dir():
            missing.append(str(root))
            continue
        for folder in find_sensor_logs(Path(str(root))):
            try:
                path = sensor_log_map_path(folder)
            except DataError:
                continue
            key = path.stem.removeprefix("log_map_archive_")
            if key in keys:
                found.setdefault(key, path)
    return [found[k] for k in sorted(found)], missing


def map_checks(tables: dict[str, TrajectoryTable], config: RealismConfig) -> dict[str, Any]:
    """``trajemb.data.map_check`` over a seeded sample of each table's maps."""
    out: dict[str, Any] = {}
    rng = np.random.default_rng(config.seed)
    for name, table in tables.items():
        files, missing = map_files(table)
        if missing:
            log.warning(
                "%s: input folder(s) %s not found: their maps are not checked", name, ", ".join(missing)
            )
        if len(files) > config.map_sample:
            files = [files[i] for i in sorted(rng.choice(len(files), config.map_sample, replace=False))]
        checks = [check_map(p) for p in files]
        if not checks:
            out[name] = {"maps": 0, "missing_inputs": missing}
            continue
        summary = summarize(checks)
        out[name] = {
            "maps": summary.maps,
            "mean": {k: _num(v) for k, v in summary.mean.items()},
            "worst": {k: _num(v) for k, v in summary.worst.items()},
            "missing_inputs": missing,
        }
    return out


# -- text --------------------------------------------------------------------------------------------
def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def report_markdown(report: RealismReport) -> str:
    """The report as Markdown tables (what ``trajemb realism`` prints)."""
    names = [name for name, _ in report.config.synthetic_tables]
    lines: list[str] = []
    for t, per_feature in report.features.items():
        moving = {n: report.tables[n]["moving"][t] for n in (REAL, *names)}
        lines.append(f"### {t}: moving windows " + ", ".join(f"{n} {m}" for n, m in moving.items()) + "\n")
        head = ["feature", "real median (p10-p90)"]
        head += [f"W1/std {n}" for n in names] + [f"KS {n}" for n in names] + ["floor"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for f in FEATURES:
            e = per_feature[f.name]
            q = e["real"]["quantiles"]
            unit = f" {f.unit}" if f.unit else ""
            row = [f.label, f"{_fmt(q[1], 3)} ({_fmt(q[0], 3)} to {_fmt(q[2], 3)}){unit}"]
            row += [_fmt(e[n]["w1_over_std"]) for n in names]
            row += [_fmt(e[n]["ks"]) for n in names]
            row.append(_fmt(e["noise_floor_w1"]))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if report.transfer is not None:
        tr = report.transfer
        lines.append(
            f"### transfer: {tr['queries']} real queries, {tr['history_steps']}-step histories, "
            f"{tr['k']} futures ({tr['method']}); the real bank leaves each query's scenario out\n"
        )
        types = sorted(next(iter(tr["banks"].values()))["by_type"])
        head = ["bank", "windows", f"minADE{tr['k']}", f"minFDE{tr['k']}", f"MR{tr['k']}", "ratio to real"]
        head += [f"ratio {t}" for t in types]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for name, e in tr["banks"].items():
            row = [name, str(e["windows"] or "-"), _fmt(e["minADE"], 3), _fmt(e["minFDE"], 3)]
            row += [_fmt(e["MR"], 3), _fmt(e["ratio"])]
            row += [_fmt(e["by_type"][t]["ratio"]) for t in types]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if report.maps is not None:
        lines.append("### maps (mean over maps, worst map in brackets)\n")
        lines.append("| maps of | maps | " + " | ".join(MEASURES) + " |")
        lines.append("|" + "---|" * (len(MEASURES) + 2))
        for name, e in report.maps.items():
            if not e["maps"]:
                lines.append(f"| {name} | 0 |" + " n/a |" * len(MEASURES))
                continue
            cells = [f"{_fmt(e['mean'][m], 3)} ({_fmt(e['worst'][m], 3)})" for m in MEASURES]
            lines.append(f"| {name} | {e['maps']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(report: RealismReport, out: Path) -> None:
    """``realism.json``, ``realism.md`` and one histogram PNG per object type, atomically."""
    with atomic_dir(out) as tmp:
        (tmp / REALISM_MARKER).write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
        (tmp / "realism.md").write_text(report_markdown(report), encoding="utf-8")
        for t, by_table in report.samples.items():
            plot_histograms(by_table, t, tmp / f"realism_{t}.png")


def plot_histograms(by_table: dict[str, dict[str, FloatArray]], object_type: str, path: Path) -> None:
    """Overlaid density histograms of every feature (one panel each), the real sample filled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = 4
    rows = -(-len(FEATURES) // cols)
    # Fixed margins (in inches): constrained layout's solver took 45 % of each figure's time.
    width_in, height_in = 4.2 * cols, 3.0 * rows
    fig = Figure(figsize=(width_in, height_in))
    fig.subplots_adjust(
        left=0.5 / width_in,
        right=1 - 0.1 / width_in,
        bottom=0.35 / height_in,
        top=1 - 0.65 / height_in,
        wspace=0.22,
        hspace=0.38,
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, f in zip(axes, FEATURES, strict=False):
        real = by_table[REAL][f.name]
        pooled = np.concatenate([x[f.name] for x in by_table.values()])
        if len(pooled) == 0:
            ax.set_axis_off()
            continue
        ref = real if len(real) else pooled
        lo, hi = np.quantile(ref, [0.005, 0.995])
        if not hi > lo:
            lo, hi = float(pooled.min()) - 0.5, float(pooled.max()) + 0.5
        bins = np.linspace(lo, hi, 41)
        for name, x in by_table.items():
            values = np.clip(x[f.name], lo, hi)
            if len(values) == 0:
                continue
            if name == REAL:
                ax.hist(values, bins=bins, density=True, color="0.75", label=f"{name} ({len(values)})")
            else:
                ax.hist(
                    values, bins=bins, density=True, histtype="step", lw=1.5, label=f"{name} ({len(values)})"
                )
        ax.set_title(f.label + (f" ({f.unit})" if f.unit else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in axes[len(FEATURES) :]:
        ax.set_axis_off()
    fig.suptitle(
        f"{object_type}: moving windows, real against synthetic (values clipped to the real 0.5-99.5 %)"
    )
    fig.savefig(path, dpi=80)
