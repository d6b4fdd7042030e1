"""Project API server of the microtvm-registry "host" template (platform_name "host").

It mirrors TVM's CRT host template (options ``verbose`` and ``workspace_size_bytes``; a model.tar
beside this script marks a generated project) but runs what today's apache-tvm produces:
``tvm.tirx.build(mod, target="c")`` exported as a Model Library Format. The generated
project compiles the model's C with the device runtime shared with the cortex-m template
(templates/common/runtime) and a device program
(src/main.c) that serves a framed binary protocol on stdin/stdout; the host-side session lives
in ``microtvm_registry.device.session``.

What every template shares is the template kit's ``TemplateServer``; this file is what is
host: its options, its files and a device that is a program on this machine. It runs under the
client's interpreter, which has microtvm_registry installed, and uses only its public template kit.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from microtvm_registry import template_kit as kit
from microtvm_registry.project_api import server

PROJECT_DIR = Path(__file__).resolve().parent
DEVICE_PROGRAM = Path("build") / "main"
DEFAULT_WORKSPACE_SIZE_BYTES = 2 * 1024 * 1024

PROJECT_OPTIONS = [
    server.ProjectOption(
        "verbose",
        optional=["build"],
        type="bool",
        default=False,
        help="Print the compiler commands while building.",
    ),
    server.ProjectOption(
        "workspace_size_bytes",
        optional=["generate_project"],
        type="int",
        default=DEFAULT_WORKSPACE_SIZE_BYTES,  # TVM's CRT host template's; a compiled model's plan is checked against it
        help="Bytes of workspace the device program gives generated code (TVMBackendAllocWorkspace).",
    ),
    server.ProjectOption(
        "cc",
        optional=["build"],
        type="str",
        help="C compiler to build with (default: make's CC, usually cc).",
    ),
]


def _memory() -> Optional[Tuple[int, str]]:
    """This machine's memory: the host program's "board"."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's memory"
    except (AttributeError, ValueError, OSError):  # not a POSIX system: the compiler decides
        return None


class Handler(kit.TemplateServer):
    platform_name = "host"
    project_options = PROJECT_OPTIONS

    def project_config(self, options: Mapping[str, Any]) -> Dict[str, Any]:
        return {"workspace_size_bytes": kit.int_option(options, "workspace_size_bytes", None)}

    def populate(self, out: Path, mlf_path: Path, config: Dict[str, Any]) -> None:
        shutil.copytree(kit.shared_runtime(PROJECT_DIR), out / "runtime")
        (out / "src").mkdir()
        shutil.copy2(PROJECT_DIR / "src" / "main.c", out / "src" / "main.c")
        _library, workspace = kit.add_model(out, mlf_path, config["workspace_size_bytes"], DEFAULT_WORKSPACE_SIZE_BYTES, _memory())
        config["workspace_size_bytes"] = workspace
        makefile = (PROJECT_DIR / "Makefile.template").read_text()
        (out / "Makefile").write_text(makefile.replace("@WORKSPACE_SIZE_BYTES@", str(workspace)))

    def make_arguments(self, options: Mapping[str, Any]) -> List[str]:
        return [f"CC={options['cc']}"] if options.get("cc") else []

    def flash(self, options):
        """Nothing to flash: the device is a program on this machine."""

    def open_device(self, options: Mapping[str, Any]):
        program = PROJECT_DIR / DEVICE_PROGRAM
        if not program.is_file():
            raise kit.TemplateKitError(f"{program} does not exist; build the project first")
        # stdin/stdout are non-blocking pipes, stderr is inherited (as in TVM's host template).
        transport = server.ChildProcessTransport([str(program)], cwd=str(PROJECT_DIR))
        return transport, server.TransportTimeouts(
            session_start_retry_timeout_sec=0,
            session_start_timeout_sec=0,
            session_established_timeout_sec=0,
        )

    def read_transport(self, n, timeout_sec):
        data = super().read_transport(n, timeout_sec)
        # Drain what is already waiting (still "1..n bytes"): one JSON-RPC round trip per pipe
        # buffer would make large tensors slow.
        chunks = [data]
        got = len(data)
        while got < n:
            try:
                more = self.live_transport().read(n - got, 0)
            except (server.IoTimeoutError, server.TransportClosedError):
                break  # EOF is reported by the next read
            chunks.append(more)
            got += len(more)
        return b"".join(chunks)


if __name__ == "__main__":
    server.main(Handler(__file__))
