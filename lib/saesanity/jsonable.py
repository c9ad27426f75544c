"""One conversion to strict JSON values, for the figure JSONs and `saesanity report`'s report.json."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


def plain(x: Any, digits: int | None = None) -> Any:
    """`x` as strict JSON values: dicts (keys as strings), lists, numpy scalars and arrays and dataclasses as Python
    values; NaN and inf as null (bare NaN is not JSON: other tools cannot read it); floats rounded to `digits`
    decimals when given."""
    if isinstance(x, dict):
        return {str(k): plain(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v, digits) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist(), digits)
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if math.isnan(v) or math.isinf(v) else (round(v, digits) if digits is not None else v)
    if isinstance(x, np.integer):
        return int(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return plain(dataclasses.asdict(x), digits)
    return x
