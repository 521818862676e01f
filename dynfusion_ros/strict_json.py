"""JSON for figures that may be missing: NaN and infinity (a figure that could not be
computed) are written as null, since they are no JSON and strict readers refuse the file."""

from __future__ import annotations

import json
import math


def _null_for_nan(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _null_for_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_null_for_nan(item) for item in value]
    return value


def dumps(value: object, **options) -> str:
    """``json.dumps`` with every non-finite float as null."""
    return json.dumps(_null_for_nan(value), allow_nan=False, **options)
