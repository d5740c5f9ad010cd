"""Helpers shared by the dataset tests."""

from __future__ import annotations


def drain(ds) -> list:
    """Every batch `ds` yields until `EOFError`."""
    batches = []
    while True:
        try:
            batches.append(ds.yield_batch())
        except EOFError:
            return batches
