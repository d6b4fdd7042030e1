"""A template written the way TVM's CRT template is: it imports the Project API from tvm.

server_info_query reports, in model_library_format_path (a free string), which modules it got,
so tests can tell the shim's server from a real TVM's.
"""
import json
import os
import sys

from tvm.micro.project_api import server
import tvm


class Handler(server.ProjectAPIHandler):
    def server_info_query(self, tvm_version):
        report = {
            "server_file": getattr(server, "__file__", None),
            "fake_real": getattr(server, "FAKE_REAL", False),
            "tvm_file": getattr(tvm, "__file__", None),
            "tvm_version_sent": tvm_version,
            "pythonpath": os.environ.get("PYTHONPATH"),
            "chained": os.environ.get("CHAINED_SITECUSTOMIZE"),
            "sys_path": sys.path,
            "executable": sys.executable,
        }
        return server.ServerInfo("host", True, json.dumps(report), [])

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        raise NotImplementedError()

    def build(self, options):
        raise NotImplementedError()

    def flash(self, options):
        raise NotImplementedError()

    def open_transport(self, options):
        raise NotImplementedError()

    def close_transport(self):
        raise NotImplementedError()

    def read_transport(self, n, timeout_sec):
        raise NotImplementedError()

    def write_transport(self, data, timeout_sec):
        raise NotImplementedError()


if __name__ == "__main__":
    server.main(Handler())
