"""Heads over frozen per-segment features: models, training, fusion, evaluation, plots, I/O.

Submodules: :mod:`.registry` (``HEADS``, ``list_heads``), :mod:`.models` (``build_head``),
:mod:`.train` (``train_head``), :mod:`.fusion` (``FUSIONS``, ``build_fusion``, late/SVM/early
fusion), :mod:`.evaluate`
(``predict_scores``, ``metrics``, ``write_predictions_csv``), :mod:`.plots` and
:mod:`.io` (``save_head``, ``load_head``). The names below are imported lazily, so
``import flowstore.heads`` does not load torch or scikit-learn.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "HEADS": "registry", "list_heads": "registry", "register_head": "registry", "build_head": "models",
    "TrainResult": "train", "train_head": "train", "class_weights_from_labels": "train",
    "FUSIONS": "fusion", "build_fusion": "fusion", "list_fusions": "fusion", "register_fusion": "fusion",
    "late_average": "fusion", "late_weighted": "fusion", "fit_late_weights": "fusion", "SVMFusion": "fusion",
    "early_concat": "fusion",
    "predict_scores": "evaluate", "metrics": "evaluate", "write_predictions_csv": "evaluate",
    "plot_confusion": "plots", "plot_curves": "plots",
    "save_head": "io", "load_head": "io", "read_head_config": "io", "ModelFileError": "io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
