"""The one table of classification heads. It is light to import (``flowstore train-head --help``
lists the heads without importing torch): builders are named as ``"module:function"`` and
imported when a head is built (:func:`flowstore.heads.models.build_head`).

A builder takes keyword arguments only: ``in_dim``, ``num_classes``, ``num_segments`` (every
head) and its own options (``hidden``, ``dropout``, ...), and returns an ``nn.Module``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..registry import Registry, resolve

#: head name -> builder, or its "module:function" reference
HEADS: Registry[Callable[..., Any] | str] = Registry("head")
#: the arguments every builder takes; the others are the head's options
COMMON_ARGUMENTS = ("in_dim", "num_classes", "num_segments")


def register_head(name: str, builder: Callable[..., Any] | str) -> None:
    HEADS.register(name, builder)


def list_heads() -> list[str]:
    return HEADS.names()


def head_builder(name: str) -> Callable[..., Any]:
    return resolve(HEADS[name])


def head_options(name: str) -> list[str]:
    """The keyword options of head ``name`` beyond :data:`COMMON_ARGUMENTS` (imports its builder)."""
    return [p for p in inspect.signature(head_builder(name)).parameters if p not in COMMON_ARGUMENTS]


register_head("linear", f"{__package__}.models:linear_head")
register_head("mlp", f"{__package__}.models:mlp_head")
register_head("transformer", f"{__package__}.models:transformer_head")
register_head("multitask", f"{__package__}.multitask:multitask_head")
