"""The template kit: the public, documented API our templates' servers are written against (and a
vendor's template may be too). A template server imports only this package and
``microtvm_registry.project_api.server``; everything else in microtvm_registry may change.

* :class:`TemplateServer` (``server_base``): a Project API server that generates a project from
  a Model Library Format, builds it with make and talks to its device; a template fills in hooks.
* project files (``project_files``): ``staged_project``, ``shared_runtime``, ``add_model`` (the MLF
  extracted safely, the function table, the workspace from the plan), ``config_of`` /
  ``write_config`` (the project's settings and the version of microtvm-registry that made it),
  ``bool_option`` / ``int_option``, ``telling_line``, ``TemplateKitError``.
* bare-metal firmware (``firmware``): ``region`` and ``linker_script`` from a board's memory regions,
  ``build_report`` / ``format_report`` from the ELF, ``explain_overflow``.
* a command given as an option (``commands``): ``fill_command`` (split, fields filled, program found).
* emulated and real boards (``emulated``): ``boot_check``, ``open_emulated``, ``open_serial``.
* target facts: ``core`` and ``family_of`` (microtvm_registry.targets).

Importing this package is cheap: the device and board pieces load when first used.
"""
from __future__ import annotations

from typing import Any

from ..targets import core, family_of
from .project_files import (
    MODEL_TAR_NAME,
    PROJECT_FILE,
    TemplateKitError,
    add_model,
    bool_option,
    config_of,
    int_option,
    project_libraries,
    shared_runtime,
    staged_project,
    telling_line,
    write_config,
)
from .server_base import TemplateServer, template_error

__all__ = [
    "MODEL_TAR_NAME", "PROJECT_FILE", "TemplateKitError", "TemplateServer", "add_model", "bool_option", "boot_check",
    "build_report", "config_of", "core", "explain_overflow", "family_of", "fill_command", "format_report", "int_option",
    "linker_script", "model_symbols", "open_emulated", "open_serial", "project_libraries", "region", "shared_runtime", "staged_project", "telling_line",
    "template_error", "write_config",
]

_LAZY = {
    "boot_check": "emulated", "open_emulated": "emulated", "open_serial": "emulated",
    "fill_command": "commands",
    "build_report": "firmware", "model_symbols": "firmware", "region": "firmware", "format_report": "firmware", "linker_script": "firmware", "explain_overflow": "firmware",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
