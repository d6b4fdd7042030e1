"""A Project API server for a template that generates a project from a Model Library Format,
builds it with ``make`` and talks to a device over a byte transport: everything our templates
share, so a template is its options, its files and its device.

A template subclasses :class:`TemplateServer` and fills in the hooks:

* ``platform_name`` and ``project_options``;
* ``project_config(options)``: the generate options checked, as the project's settings;
* ``populate(out, mlf_path, config)``: the template's files and the model, into the staging folder;
* ``make_arguments(options)`` and ``after_build(output)`` (a size report), ``explain_build_failure(output)``;
* ``flash(options)``;
* ``open_device(options)``: a transport object with ``read(n, timeout)``, ``write(data, timeout)``
  and ``close()``, and the session timeouts.

The base does the rest the same way for every template: the server-info answer, generating into
a staging folder renamed into place, recording the settings and the generator's version, running
make with the telling error line and the compiler's last lines, and closing the device whenever
its transport ends.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..project_api import server
from .project_files import MODEL_TAR_NAME, TemplateKitError, bool_option, config_of, staged_project, telling_line, write_config

#: Compiler lines shown under a failed build's one-line error.
BUILD_LOG_TAIL_LINES = 25


def template_error(message: str) -> server.ServerError:
    """A failed step, as the plain ServerError whose free-form message crosses the wire
    (ServerError subclasses cannot carry a message: their class name is their message)."""
    return server.ServerError(message)


class TemplateServer(server.ProjectAPIHandler):
    """The shared part of our templates' servers (see the module docstring)."""

    platform_name = ""
    project_options: List[server.ProjectOption] = []

    def __init__(self, server_file: str) -> None:
        super().__init__()
        self.server_file = Path(server_file).resolve()
        self.project_dir = self.server_file.parent
        self.is_template = not (self.project_dir / MODEL_TAR_NAME).exists()
        self.config: Dict[str, Any] = {} if self.is_template else config_of(self.project_dir)
        self._transport: Any = None

    # ------------------------------------------------------------------ hooks

    def project_config(self, options: Mapping[str, Any]) -> Dict[str, Any]:
        return {}

    def populate(self, out: Path, mlf_path: Path, config: Dict[str, Any]) -> None:
        raise NotImplementedError

    def make_arguments(self, options: Mapping[str, Any]) -> List[str]:
        return []

    def after_build(self, output: str) -> None:
        """Called after a successful build (``output``: make's)."""

    def explain_build_failure(self, output: str) -> Optional[str]:
        """A one-line explanation of a failed build better than its telling line, if any."""
        return None

    def open_device(self, options: Mapping[str, Any]) -> Tuple[Any, server.TransportTimeouts]:
        raise NotImplementedError

    def close_device(self) -> None:
        """Ends what open_device started besides the transport (an emulator)."""

    # ------------------------------------------------------------------ info

    def server_info_query(self, tvm_version: str) -> server.ServerInfo:
        return server.ServerInfo(
            platform_name=self.platform_name,
            is_template=self.is_template,
            model_library_format_path="" if self.is_template else str(self.project_dir / MODEL_TAR_NAME),
            project_options=self.project_options,
        )

    def require_project(self) -> None:
        if self.is_template:
            raise template_error("this is the template, not a generated project; run generate_project first")

    # -------------------------------------------------------------- generate

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        try:
            config = self.project_config(options or {})
            with staged_project(Path(project_dir)) as out:
                shutil.copy2(self.server_file, out / self.server_file.name)
                self.populate(out, Path(model_library_format_path), config)
                write_config(out, config)
        except TemplateKitError as err:
            raise template_error(str(err)) from None

    # ----------------------------------------------------------------- build

    def build(self, options):
        options = options or {}
        self.require_project()
        make = shutil.which("make")
        if make is None:
            raise template_error("`make` is not on PATH; install make and a C compiler (e.g. apt install build-essential)")
        verbose = bool_option(options.get("verbose"))
        cmd = [make, "-C", str(self.project_dir)] + (["V=1"] if verbose else []) + self.make_arguments(options)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        output = proc.stdout.decode("utf-8", "replace")
        if verbose:
            sys.stderr.write(output)
        if proc.returncode != 0:
            explained = self.explain_build_failure(output)
            if explained:
                raise template_error(explained)
            lines = output.rstrip().splitlines()
            tail = "\n".join(lines[-BUILD_LOG_TAIL_LINES:])
            raise template_error(
                f"build of {self.project_dir} failed (make exited {proc.returncode}): {telling_line(lines)}; "
                f"the compiler's last lines:\n{tail}"
            )
        self.after_build(output)

    # ------------------------------------------------------------- transport

    def open_transport(self, options):
        self.require_project()
        self.close_transport()
        try:
            self._transport, timeouts = self.open_device(options or {})
        except TemplateKitError as err:
            self.close_transport()
            raise template_error(str(err)) from None
        except BaseException:
            self.close_transport()
            raise
        return timeouts

    def close_transport(self):
        transport, self._transport = self._transport, None
        try:
            if transport is not None:
                transport.close()
        finally:
            self.close_device()

    def live_transport(self) -> Any:
        if self._transport is None:
            raise server.TransportClosedError()
        return self._transport

    def read_transport(self, n, timeout_sec):
        try:
            return self.live_transport().read(n, timeout_sec)
        except server.TransportClosedError:
            self.close_transport()  # the device ended: reap it now
            raise

    def write_transport(self, data, timeout_sec):
        try:
            self.live_transport().write(data, timeout_sec)
        except server.TransportClosedError:
            self.close_transport()
            raise
