"""``trajemb forecast`` as a library call: its frozen config and what it does.

Every input is checked before any work starts (the bank opens, the query table's manifest fits the
bank: length, step rate, a history that leaves a future; K within the bank; ``--out`` may be written);
the scores are then computed (``trajemb.analysis.forecast.forecast_table``) and written atomically, only ever
replacing a scores file trajemb wrote (``trajemb.core.outputs``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trajemb.analysis.forecast import (
    ALIGNMENTS,
    DEFAULT_RERANK,
    MAX_RERANK,
    Alignment,
    ForecastConfig,
    ForecastResult,
)
from trajemb.core.atomic import write_text_atomic
from trajemb.core.errors import ConfigError
from trajemb.core.fields import K_BOUNDS, K_MODES_DEFAULT, param
from trajemb.data.history import DEFAULT_HISTORY_STEPS
from trajemb.data.schema import MAX_WINDOW_STEPS


@dataclass(frozen=True)
class ForecastCommand:
    """The flags of ``trajemb forecast``, one field each (``trajemb.cli_fields`` builds them)."""

    bank: str = param(help="bundle whose windows are the bank (trajemb bundle)")
    queries: str = param(help="trajectory table of query windows (trajemb prepare)")
    history_steps: int = param(
        DEFAULT_HISTORY_STEPS,
        help="steps of each window that are the history",
        low=2,
        high=MAX_WINDOW_STEPS - 1,
    )
    k: int = param(K_MODES_DEFAULT, help="forecasts per query", bounds=K_BOUNDS)
    alignment: Alignment = param(
        "last_state", help="how retrieved futures are aligned to the query (docs/retrieval-quality.md)"
    )
    rerank: int = param(
        DEFAULT_RERANK,
        help="learned retrieval: re-rank the embedding's nearest N histories by raw distance "
        "(0: the embedding's K nearest as they are)",
        low=0,
        high=MAX_RERANK,
    )
    json: bool = param(False, help="print the scores as JSON")
    out: str | None = param(None, help="also write the scores as JSON to this file")

    def __post_init__(self) -> None:
        for name in ("bank", "queries"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must name a path, got {value!r:.60}", fields=(name,))
        if self.out is not None and (not isinstance(self.out, str) or not self.out.strip()):
            raise ConfigError(f"out must name a file, got {self.out!r:.60}", fields=("out",))
        if self.alignment not in ALIGNMENTS:
            raise ConfigError(
                f"alignment must be one of {', '.join(ALIGNMENTS)}, got {self.alignment!r:.40}",
                fields=("alignment",),
            )
        self.forecast_config()  # ranges of history_steps, k and rerank

    def forecast_config(self) -> ForecastConfig:
        return ForecastConfig(
            history_steps=self.history_steps, k=self.k, alignment=self.alignment, rerank=self.rerank
        )


def run_forecast(command: ForecastCommand, progress: bool = True) -> ForecastResult:
    """Check every input, forecast every query window, write ``--out``; returns the scores."""
    from trajemb.analysis.bundle import Bundle
    from trajemb.analysis.forecast import check_query_windows, forecast_bank, forecast_table
    from trajemb.core.outputs import check_output_file
    from trajemb.data.store import read_manifest, read_table

    config = command.forecast_config()
    bundle = Bundle(Path(command.bank))
    bank = forecast_bank(bundle, config)  # refuses a history without a future, --k above the bank
    manifest = read_manifest(Path(command.queries))
    check_query_windows(bank, int(manifest["num_steps"]), manifest.get("window_config"), command.queries)
    if command.out is not None:
        check_output_file(Path(command.out), "forecast", [Path(command.bank), Path(command.queries)])
    table = read_table(Path(command.queries))
    result = forecast_table(bundle, table, config, progress=progress, what=command.queries)
    if command.out is not None:
        write_text_atomic(Path(command.out), scores_json(result))
    return result


def scores_json(result: ForecastResult) -> str:
    """``{method: {minADE<k>, minFDE<k>, MR<k>, brier_minFDE<k>, queries}}`` as JSON text."""
    return json.dumps(result.scores, indent=2) + "\n"


def scores_table(result: ForecastResult) -> str:
    """The scores as a Markdown table, one row per method."""
    k = result.config.k
    columns = [f"minADE{k}", f"minFDE{k}", f"MR{k}", f"brier_minFDE{k}"]
    lines = ["| method | " + " | ".join(columns) + " | queries |", "|---|" + "---|" * (len(columns) + 1)]
    for method, s in result.scores.items():
        cells = [f"{float(s[c]):.3f}" for c in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {int(s['queries'])} |")
    return "\n".join(lines)
