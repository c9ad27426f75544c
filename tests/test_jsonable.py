import dataclasses
import json

import numpy as np

from saesanity.jsonable import plain


def test_strict_json_with_null_for_undefined_numbers():
    got = plain({"a": float("nan"), "b": [np.float32(0.5), np.inf], "c": np.int64(3), "d": np.bool_(True),
                 "e": np.array([1.0, np.nan]), 4: (1, 2)})
    assert json.loads(json.dumps(got, allow_nan=False)) == {"a": None, "b": [0.5, None], "c": 3, "d": True,
                                                            "e": [1.0, None], "4": [1, 2]}


def test_figures_round_to_the_digits_asked_and_dataclasses_become_dicts():
    @dataclasses.dataclass
    class P:
        lr: float
        seeds: list

    assert plain({"x": 0.123456789, "p": P(1 / 3, [0, 1])}, 6) == {"x": 0.123457, "p": {"lr": 0.333333, "seeds": [0, 1]}}
    assert plain(0.123456789) == 0.123456789 and plain(True) is True and plain(3) == 3
