"""Project API server of the microtvm-registry "host" template (platform_name "host").

It mirrors TVM's CRT host template (options ``verbose`` and ``workspace_size_bytes``; a model.tar
beside this script marks a generated project) but runs what today's apache-tvm produces:
``tvm.tirx.build(mod, target="c")`` exported with ``microtvm_registry.compile.mlf``. The generated
project compiles the model's C with the device runtime shared with the cortex-m template
(templates/common/runtime) and a device program
(src/main.c) that serves a framed binary protocol on stdin/stdout; the host-side session lives
in ``microtvm_registry.device.session``.

This script runs under the client's interpreter, which has microtvm_registry installed.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from microtvm_registry.compile import template_kit as kit
from microtvm_registry.project_api import server

PROJECT_DIR = Path(__file__).resolve().parent
MODEL_TAR_NAME = "model.tar"
IS_TEMPLATE = not (PROJECT_DIR / MODEL_TAR_NAME).exists()
DEVICE_PROGRAM = Path("build") / "main"
DEFAULT_WORKSPACE_SIZE_BYTES = 2 * 1024 * 1024
BUILD_LOG_TAIL_LINES = 25

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


def HostTemplateError(message: str) -> server.ServerError:
    """A failed step, as the plain ServerError whose free-form message crosses the wire.

    (ServerError subclasses cannot carry a message: their class name is their message.)
    """
    return server.ServerError(message)


class Handler(server.ProjectAPIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._transport: Optional[server.ChildProcessTransport] = None

    # ------------------------------------------------------------------ info

    def server_info_query(self, tvm_version: str) -> server.ServerInfo:
        return server.ServerInfo(
            platform_name="host",
            is_template=IS_TEMPLATE,
            model_library_format_path="" if IS_TEMPLATE else str(PROJECT_DIR / MODEL_TAR_NAME),
            project_options=PROJECT_OPTIONS,
        )

    # -------------------------------------------------------------- generate

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        options = options or {}
        try:
            workspace = kit.int_option(options, "workspace_size_bytes", None)
            with kit.staged_project(Path(project_dir)) as out:
                shutil.copy2(__file__, out / "microtvm_api_server.py")
                shutil.copytree(kit.shared_runtime(PROJECT_DIR), out / "runtime")
                (out / "src").mkdir()
                shutil.copy2(PROJECT_DIR / "src" / "main.c", out / "src" / "main.c")
                _library, workspace = kit.add_model(out, Path(model_library_format_path), workspace, DEFAULT_WORKSPACE_SIZE_BYTES)
                makefile = (PROJECT_DIR / "Makefile.template").read_text()
                (out / "Makefile").write_text(makefile.replace("@WORKSPACE_SIZE_BYTES@", str(workspace)))
        except kit.TemplateKitError as err:
            raise HostTemplateError(str(err)) from None

    # ----------------------------------------------------------------- build

    def build(self, options):
        options = options or {}
        make = shutil.which("make")
        if make is None:
            raise HostTemplateError("`make` is not on PATH; install make and a C compiler (e.g. apt install build-essential)")
        verbose = kit.bool_option(options.get("verbose"))
        cmd = [make, "-C", str(PROJECT_DIR)]
        if verbose:
            cmd.append("V=1")
        if options.get("cc"):
            cmd.append(f"CC={options['cc']}")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        output = proc.stdout.decode("utf-8", "replace")
        if verbose:
            sys.stderr.write(output)
        if proc.returncode != 0:
            lines = output.rstrip().splitlines()
            # The first line is what a CLI shows: give it the most telling compiler line too.
            summary = kit.telling_line(lines)
            tail = "\n".join(lines[-BUILD_LOG_TAIL_LINES:])
            raise HostTemplateError(
                f"build of {PROJECT_DIR} failed (make exited {proc.returncode}): {summary}; "
                f"the compiler's last lines:\n{tail}"
            )

    def flash(self, options):
        """Nothing to flash: the device is a program on this machine."""

    # ------------------------------------------------------------- transport

    def open_transport(self, options):
        program = PROJECT_DIR / DEVICE_PROGRAM
        if not program.is_file():
            raise HostTemplateError(f"{program} does not exist; build the project first")
        self.close_transport()
        # stdin/stdout are non-blocking pipes, stderr is inherited (as in TVM's host template).
        self._transport = server.ChildProcessTransport([str(program)], cwd=str(PROJECT_DIR))
        return server.TransportTimeouts(
            session_start_retry_timeout_sec=0,
            session_start_timeout_sec=0,
            session_established_timeout_sec=0,
        )

    def close_transport(self):
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def _live(self) -> "server.ChildProcessTransport":
        if self._transport is None:
            raise server.TransportClosedError()
        return self._transport

    def read_transport(self, n, timeout_sec):
        transport = self._live()
        try:
            data = transport.read(n, timeout_sec)
        except server.TransportClosedError:
            self.close_transport()  # the device program exited: reap it now
            raise
        # Drain what is already waiting (still "1..n bytes"): one JSON-RPC round trip per pipe
        # buffer would make large tensors slow.
        chunks = [data]
        got = len(data)
        while got < n:
            try:
                more = transport.read(n - got, 0)
            except (server.IoTimeoutError, server.TransportClosedError):
                break  # EOF is reported by the next read
            chunks.append(more)
            got += len(more)
        return b"".join(chunks)

    def write_transport(self, data, timeout_sec):
        try:
            self._live().write(data, timeout_sec)
        except server.TransportClosedError:
            self.close_transport()
            raise


if __name__ == "__main__":
    server.main(Handler())
