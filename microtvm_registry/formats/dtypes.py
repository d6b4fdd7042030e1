"""Tensor element types as DLPack spells them: what MLF metadata, sessions and devices share.
"""
from __future__ import annotations

from typing import Tuple

from ..errors import SessionError


# DLPack type codes.
DL_INT, DL_UINT, DL_FLOAT, DL_BFLOAT, DL_BOOL = 0, 1, 2, 4, 6


_DTYPE_CODES = {"int": DL_INT, "uint": DL_UINT, "float": DL_FLOAT, "bfloat": DL_BFLOAT}


def parse_dtype(dtype: str) -> Tuple[int, int, int]:
    """``"float32"`` -> (code, bits, lanes) as DLPack spells it; ``"int8x4"`` has 4 lanes."""
    text = str(dtype)
    if text == "bool":
        return DL_BOOL, 8, 1
    lanes = 1
    if "x" in text:
        text, _, lane_text = text.partition("x")
        lanes = int(lane_text)
    for prefix in ("bfloat", "float", "uint", "int"):
        if text.startswith(prefix) and text[len(prefix) :].isdigit():
            return _DTYPE_CODES[prefix], int(text[len(prefix) :]), lanes
    raise SessionError(f"dtype {dtype!r} is not supported by the host protocol; use int/uint/float/bool types")
