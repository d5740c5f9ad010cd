"""Module attributes that live in another module: one value, read and written by both names."""

from __future__ import annotations

import importlib
import sys


def forward_attribute(module_name: str, name: str, target_module: str) -> None:
    """Makes `module_name.name` read and write `target_module.name`.

    Used for settings such as `ktl.DEFAULT_MAX_EXECUTORS`, documented under
    several names: a copy per module would let a write under one name go
    unseen by code that reads the other.
    """
    module = sys.modules[module_name]

    def get(_module):
        return getattr(importlib.import_module(target_module), name)

    def set_(_module, value):
        setattr(importlib.import_module(target_module), name, value)

    attribute = property(get, set_, doc=f"{target_module}.{name}")
    module.__class__ = type(type(module).__name__, (type(module),), {name: attribute})
