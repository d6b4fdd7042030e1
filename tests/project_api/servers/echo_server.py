"""A small, complete template-like Project API server with a loopback transport.

Stable behaviour (other tests rely on it):
- platform_name "echo"; a template unless ``model.tar`` sits beside this script, in which case
  model_library_format_path is that file's absolute path (a template reports "").
- Options: project_type (str, choices host_driven/echo, required for generate_project), verbose
  (bool, default false, optional for generate_project and build), workspace_size_bytes (int,
  default 2097152, optional for generate_project), legacy_flag (TVM v0.8 form: choices and help).
- generate_project: makes project_dir (an existing one is an error), copies this script in as
  microtvm_api_server.py, copies the MLF to model.tar, writes options.json; returns null.
- build writes build/options.json; flash writes flashed.json (both the options they got).
- open_transport returns timeouts 2.0/5.0/5.0; what write_transport gets, read_transport gives
  back (1..n bytes; IoTimeoutError when nothing is buffered; TransportClosedError when closed).
"""
import json
import shutil
from pathlib import Path

try:
    from microtvm_registry.project_api import server
except ImportError:  # a copy of server.py beside this script
    import server

HERE = Path(__file__).resolve().parent
MLF = HERE / "model.tar"

OPTIONS = [
    server.ProjectOption("project_type", type="str", choices=["host_driven", "echo"],
                         required=["generate_project"], help="Kind of project."),
    server.ProjectOption("verbose", type="bool", default=False,
                         optional=["generate_project", "build"], help="Chatty build."),
    server.ProjectOption("workspace_size_bytes", type="int", default=2097152,
                         optional=["generate_project"], help="Arena size in bytes."),
    server.ProjectOption("legacy_flag", choices=(True, False), help="A TVM v0.8-style option."),
]


class EchoHandler(server.ProjectAPIHandler):
    def __init__(self):
        self._buffer = None  # None: transport closed

    def server_info_query(self, tvm_version):
        is_template = not MLF.exists()
        return server.ServerInfo(
            platform_name="echo",
            is_template=is_template,
            model_library_format_path="" if is_template else str(MLF),
            project_options=OPTIONS,
        )

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        project_dir.mkdir()
        shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
        if (HERE / "server.py").exists():
            shutil.copy2(HERE / "server.py", project_dir / "server.py")
        shutil.copy2(model_library_format_path, project_dir / "model.tar")
        (project_dir / "options.json").write_text(json.dumps(options, sort_keys=True))

    def build(self, options):
        (HERE / "build").mkdir(exist_ok=True)
        (HERE / "build" / "options.json").write_text(json.dumps(options, sort_keys=True))

    def flash(self, options):
        (HERE / "flashed.json").write_text(json.dumps(options, sort_keys=True))

    def open_transport(self, options):
        self._buffer = bytearray()
        return server.TransportTimeouts(
            session_start_retry_timeout_sec=2.0,
            session_start_timeout_sec=5.0,
            session_established_timeout_sec=5.0,
        )

    def close_transport(self):
        self._buffer = None

    def read_transport(self, n, timeout_sec):
        if self._buffer is None:
            raise server.TransportClosedError()
        if not self._buffer:
            raise server.IoTimeoutError()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def write_transport(self, data, timeout_sec):
        if self._buffer is None:
            raise server.TransportClosedError()
        self._buffer += data


if __name__ == "__main__":
    server.main(EchoHandler())
