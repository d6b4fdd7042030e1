"""The TFLite frontend (a flatbuffer with the ``TFL3`` identifier at bytes 4..8)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ...errors import ModelError
from . import TFLITE_IDENTIFIER, ImportedModel

FORMAT = "tflite"


def sniff(head: bytes, suffix: str) -> bool:
    return head[4:8] == TFLITE_IDENTIFIER


def import_model(path: Path, given: Mapping[str, Sequence[int]], reserved: Sequence[str]) -> ImportedModel:
    raise ModelError(f"{path.name} is a TFLite model, which this microtvm-registry cannot compile yet; convert it to ONNX")
