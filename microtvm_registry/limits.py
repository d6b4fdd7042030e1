"""Size limits for what we download, unpack or parse from files a user may have been handed
(template archives, Model Library Formats, JSON), each overridable from the environment, so
that a hostile or broken file costs seconds and megabytes, never hours or gigabytes.
"""
from __future__ import annotations

import os

from .errors import MicrotvmError

#: Bytes an archive (template or MLF) may expand to, in all.
MAX_EXTRACTED_ENV = "MICROTVM_REGISTRY_MAX_EXTRACTED_BYTES"
DEFAULT_MAX_EXTRACTED_BYTES = 1024 * 1024 * 1024
#: Members an archive may hold (no template or model is that large).
MAX_MEMBERS = 100_000
#: Bytes of one JSON file we parse (an MLF's metadata.json or plan.json): real ones are kilobytes.
MAX_JSON_ENV = "MICROTVM_REGISTRY_MAX_JSON_BYTES"
DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024


def env_number(env: str, default: float, unit: str, error: type = MicrotvmError) -> float:
    """A positive number from ``env``, or ``default``; anything else names the variable."""
    text = os.environ.get(env, "")
    try:
        value = float(text) if text.strip() else default
    except ValueError:
        raise error(f"{env}={text!r} is not a number of {unit}") from None
    return value if value > 0 else default


def byte_limit(env: str, default: int, error: type = MicrotvmError) -> int:
    """A size limit from ``env`` (bytes) or ``default``."""
    return int(env_number(env, default, "bytes", error))
