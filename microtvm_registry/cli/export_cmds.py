"""``microtvm export``: a compiled model as a library folder for CMake, PlatformIO or Arduino
(the library's :mod:`microtvm_registry.export`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..formats.names import printable
from ._common import add_json_flag, print_json

FORMATS = ("cmake", "platformio", "arduino")  # as export.FORMATS (not imported: keeps the parser light)


def register(subparsers) -> None:
    """Add ``export``."""
    export = subparsers.add_parser(
        "export",
        help="a compiled model as a library folder for your firmware's build (CMake, PlatformIO, Arduino)",
        description=(
            "Write MODEL_TAR (what microtvm compile made) as a self-contained library folder: the model's C and "
            "header, the runtime, the kernel libraries it was compiled with (from the verified cache, with their "
            "licenses), the build system's glue and a short example."
        ),
    )
    export.add_argument("mlf", metavar="MODEL_TAR", help="a Model Library Format tar from microtvm compile")
    export.add_argument("--format", required=True, choices=FORMATS, help="the build system to write the glue for")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to create (must not exist)")
    add_json_flag(export)
    export.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_model

    result = export_model(Path(args.mlf), args.format, Path(args.output))
    if getattr(args, "json", False):
        print_json(result.to_json())
    else:
        libs = "".join(f", {lib['name']} {lib['version']}" for lib in result.libraries)
        print(f"exported {printable(result.model)} ({result.target}) as a {result.format} library into "
              f"{printable(str(result.path))}: {len(result.sources)} C sources{libs}")
    return 0
