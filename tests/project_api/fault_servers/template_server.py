"""A small, real template server for tests (uses microtvm_registry's server module).

generate_project copies this file (and the ``v08`` marker) into the new project, puts the MLF at
model.tar, and records everything it was sent in ``calls.jsonl`` of the project. build writes
build/firmware.txt, flash writes flashed.txt. The transport is a loopback: what is written is
read back. Options (v0.12 style unless a ``v08`` file sits beside this script):
project_type (required for generate_project, choices), verbose (bool), workspace_size_bytes (int),
ratio (float), fail_generate (bool: create the folder, then fail), skip_copy (bool: do not copy
the server into the project), copy_crt (bool: copy standalone_crt/include like TVM's templates).
"""
import json
import os
import shutil
from pathlib import Path

from microtvm_registry.project_api import server

HERE = Path(__file__).resolve().parent
V08 = (HERE / "v08").exists()
IS_TEMPLATE = not (HERE / "model.tar").exists()


def _options():
    if V08:
        return [
            server.ProjectOption("project_type", choices=["host_driven", "aot"], help="kind of project"),
            server.ProjectOption("verbose", choices=[True, False], help="chatty build"),
        ]
    return [
        server.ProjectOption("project_type", type="str", choices=["host_driven", "aot"],
                             required=["generate_project"], help="kind of project"),
        server.ProjectOption("verbose", type="bool", default=False, optional=["build"], help="chatty build"),
        server.ProjectOption("workspace_size_bytes", type="int", default=2097152,
                             optional=["generate_project"], help="arena size"),
        server.ProjectOption("ratio", type="float", optional=["build"], help="a float"),
        server.ProjectOption("fail_generate", type="bool", default=False, optional=["generate_project"],
                             help="fail half way"),
        server.ProjectOption("skip_copy", type="bool", default=False, optional=["generate_project"],
                             help="do not copy the server"),
        server.ProjectOption("copy_crt", type="bool", default=False, optional=["generate_project"],
                             help="copy standalone_crt/include, as TVM's templates do"),
    ]


class Handler(server.ProjectAPIHandler):
    def __init__(self):
        super().__init__()
        self._loop = None

    def _log(self, method, **kw):
        with open(HERE / "calls.jsonl", "a") as f:
            f.write(json.dumps({"method": method, "cwd": os.getcwd(), **kw}) + "\n")

    def server_info_query(self, tvm_version):
        return server.ServerInfo(
            platform_name="testplat",
            is_template=IS_TEMPLATE,
            model_library_format_path="" if IS_TEMPLATE else str(HERE / "model.tar"),
            project_options=_options(),
        )

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        project_dir = Path(project_dir)
        project_dir.mkdir()
        (project_dir / "partial.txt").write_text("half way")
        if options.get("fail_generate"):
            raise server.ServerError("generate failed on purpose")
        if options.get("copy_crt"):
            shutil.copytree(Path(standalone_crt_dir) / "include", project_dir / "crt" / "include")
        if not options.get("skip_copy"):
            shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
            if V08:
                (project_dir / "v08").write_text("")
        shutil.copy2(model_library_format_path, project_dir / "model.tar")
        with open(project_dir / "calls.jsonl", "a") as f:
            f.write(json.dumps({"method": "generate_project", "cwd": os.getcwd(),
                                "model_library_format_path": str(model_library_format_path),
                                "standalone_crt_dir": str(standalone_crt_dir),
                                "standalone_crt_entries": sorted(os.listdir(standalone_crt_dir)),
                                "project_dir": str(project_dir), "options": options}) + "\n")

    def build(self, options):
        self._log("build", options=options)
        Path("build").mkdir(exist_ok=True)
        Path("build/firmware.txt").write_text("firmware")

    def flash(self, options):
        self._log("flash", options=options)
        Path("flashed.txt").write_text("flashed")

    def open_transport(self, options):
        self._log("open_transport", options=options, pid=os.getpid())
        self._loop = bytearray()
        return server.TransportTimeouts(session_start_retry_timeout_sec=1.5, session_start_timeout_sec=2.0,
                                        session_established_timeout_sec=0.0)

    def close_transport(self):
        self._log("close_transport")
        self._loop = None

    def read_transport(self, n, timeout_sec):
        if self._loop is None:
            raise server.TransportClosedError()
        if not self._loop:
            raise server.IoTimeoutError()
        data = bytes(self._loop[:n])
        del self._loop[:n]
        return data

    def write_transport(self, data, timeout_sec):
        if self._loop is None:
            raise server.TransportClosedError()
        self._loop += data


if __name__ == "__main__":
    server.main(Handler())
