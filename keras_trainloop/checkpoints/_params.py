"""Hyperparameters in a checkpoint: one JSON record per (scope, key, value), and back."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def encode_param(scope: str, key: str, value: Any) -> dict | None:
    """A JSON record for one hyperparameter, or None when JSON cannot hold it."""
    if isinstance(value, np.generic):
        value = value.item()
    kind = type(value).__name__
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, (bool, int, float, str, type(None), list, dict)):
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError):
            return None
        return {"scope": scope, "key": key, "value": value, "type": kind}
    return None


def decode_param(record: dict) -> Any:
    value = record["value"]
    if record.get("type") == "tuple" and isinstance(value, list):
        return tuple(value)
    if record.get("type") == "float" and isinstance(value, int):
        return float(value)
    return value
