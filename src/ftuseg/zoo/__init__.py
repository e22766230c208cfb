"""Shipped models (the model zoo): list, show, load, predict with, fine-tune from, and package them.

``ftuseg models`` / ``ftuseg models show NAME`` / ``ftuseg predict --model NAME ...`` /
``ftuseg.load_model(NAME)`` / ``ftuseg train DATA --init-from NAME`` /
``ftuseg models package RUN_DIR --name NAME`` (= ``python -m ftuseg.zoo.package``).
See :mod:`ftuseg.zoo.registry` for the layout of a model folder.
"""

from ftuseg.zoo.package import PackageResult, package_run
from ftuseg.zoo.registry import (
    ZOO_ENV,
    ZooModel,
    format_models_table,
    get_model,
    list_models,
    load_model,
    model_card,
    model_dir,
    onnx_cache_path,
    resolve_models,
    shipped_root,
    zoo_roots,
)

__all__ = [
    "ZOO_ENV", "PackageResult", "ZooModel", "format_models_table", "get_model", "list_models", "load_model",
    "model_card", "model_dir", "onnx_cache_path", "package_run", "resolve_models", "shipped_root", "zoo_roots",
]
