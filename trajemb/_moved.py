"""Old import paths of modules that moved into subpackages (issue 21): ``import trajemb.train`` keeps
working for a release, with a DeprecationWarning naming the new path. Written by the restructure codemod."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence

#: Old module -> its new home.
MOVED: dict[str, str] = {
    "trajemb.atomic": "trajemb.core.atomic",
    "trajemb.augment": "trajemb.training.augment",
    "trajemb.batch_loss": "trajemb.training.batch_loss",
    "trajemb.batches": "trajemb.training.batches",
    "trajemb.bundle": "trajemb.analysis.bundle",
    "trajemb.bundle_build": "trajemb.serving.bundle_build",
    "trajemb.checkpoint": "trajemb.training.checkpoint",
    "trajemb.completion": "trajemb.serving.completion",
    "trajemb.devices": "trajemb.core.devices",
    "trajemb.distributed": "trajemb.training.distributed",
    "trajemb.duplicates": "trajemb.analysis.duplicates",
    "trajemb.embed": "trajemb.training.embed",
    "trajemb.engines.ray_embed": "trajemb.training.ray_embed",
    "trajemb.engines.ray_prepare": "trajemb.data.ray_prepare",
    "trajemb.engines.ray_runtime": "trajemb.core.ray_runtime",
    "trajemb.errors": "trajemb.core.errors",
    "trajemb.evaluate": "trajemb.analysis.evaluate",
    "trajemb.explore": "trajemb.serving.explore",
    "trajemb.export": "trajemb.analysis.export",
    "trajemb.fields": "trajemb.core.fields",
    "trajemb.forecast": "trajemb.analysis.forecast",
    "trajemb.forecast_command": "trajemb.analysis.forecast_command",
    "trajemb.forecast_metrics": "trajemb.analysis.forecast_metrics",
    "trajemb.frames": "trajemb.data.frames",
    "trajemb.history": "trajemb.data.history",
    "trajemb.index": "trajemb.retrieval.index",
    "trajemb.integrity": "trajemb.core.integrity",
    "trajemb.interrupts": "trajemb.core.interrupts",
    "trajemb.jsonio": "trajemb.core.jsonio",
    "trajemb.label_quality": "trajemb.analysis.label_quality",
    "trajemb.labels": "trajemb.data.labels",
    "trajemb.lanes": "trajemb.data.lanes",
    "trajemb.linear_base": "trajemb.training.linear_base",
    "trajemb.losses": "trajemb.training.losses",
    "trajemb.map_check": "trajemb.data.map_check",
    "trajemb.metrics": "trajemb.retrieval.metrics",
    "trajemb.mining": "trajemb.training.mining",
    "trajemb.model": "trajemb.training.model",
    "trajemb.motion_models": "trajemb.analysis.motion_models",
    "trajemb.outputs": "trajemb.core.outputs",
    "trajemb.paths": "trajemb.core.paths",
    "trajemb.perturb": "trajemb.data.perturb",
    "trajemb.pipeline": "trajemb.serving.pipeline",
    "trajemb.prepare": "trajemb.data.prepare",
    "trajemb.projection": "trajemb.retrieval.projection",
    "trajemb.query": "trajemb.data.query",
    "trajemb.realism": "trajemb.analysis.realism",
    "trajemb.realism_report": "trajemb.analysis.realism_report",
    "trajemb.realism_transfer": "trajemb.analysis.realism_transfer",
    "trajemb.report": "trajemb.analysis.report",
    "trajemb.robustness": "trajemb.retrieval.robustness",
    "trajemb.run_folder": "trajemb.training.run_folder",
    "trajemb.schema": "trajemb.data.schema",
    "trajemb.search": "trajemb.retrieval.search",
    "trajemb.similarity": "trajemb.training.similarity",
    "trajemb.sketch": "trajemb.analysis.sketch",
    "trajemb.soft_neighbor_loss": "trajemb.training.soft_neighbor_loss",
    "trajemb.store": "trajemb.data.store",
    "trajemb.synth": "trajemb.data.synth",
    "trajemb.train": "trajemb.training.train",
    "trajemb.train_state": "trajemb.training.train_state",
    "trajemb.truth": "trajemb.data.truth",
    "trajemb.uniqueness": "trajemb.analysis.uniqueness",
    "trajemb.validate": "trajemb.core.validate",
    "trajemb.viz": "trajemb.serving.viz",
    "trajemb.windows": "trajemb.data.windows",
    "trajemb.workers": "trajemb.core.workers",
}


def new_name(old: str) -> str | None:
    """The new name of an old module, or of a module inside an old package (``trajemb.synth.generate``)."""
    head, tail = old, ""
    while head not in MOVED:
        if "." not in head:
            return None
        head, _, last = head.rpartition(".")
        tail = f".{last}{tail}"
    return MOVED[head] + tail


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and hands out the module at its new one (the same object)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = new_name(spec.name)
        assert new is not None
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: types.ModuleType) -> None:
        """The module is the new one, already executed."""


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # before any finder that still knows the old files
