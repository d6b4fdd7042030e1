"""A handler whose every odd behaviour is chosen by the request, for conformance tests.

build's ``options["action"]`` picks what happens (see ACTIONS); other methods echo what they got
so a test can see how the server converted it.
"""
import sys
from pathlib import Path

try:
    from microtvm_registry.project_api import server
except ImportError:  # a copy of server.py beside this script
    import server


class Odd:
    """Not JSON-serialisable."""


def _raise(exc):
    raise exc


ACTIONS = {
    "value-error": lambda o: _raise(ValueError("plain failure")),
    "server-error": lambda o: _raise(server.ServerError("free-form message")),
    "server-error-data": lambda o: _raise(server.ServerError("with data", data={"k": 1})),
    "server-error-str-data": lambda o: _raise(server.ServerError("str data", data="note")),
    "server-error-bad-data": lambda o: _raise(server.ServerError("bad", data={"o": Odd()})),
    "io-timeout": lambda o: _raise(server.IoTimeoutError()),
    "transport-closed": lambda o: _raise(server.TransportClosedError()),
    "unsupported": lambda o: _raise(server.UnsupportedTVMVersionError()),
    "jsonrpc-error": lambda o: _raise(
        server.JSONRPCError(server.ErrorCode.INVALID_PARAMS, "handler says no", {"why": "test"})),
    "jsonrpc-bad-code": lambda o: _raise(server.JSONRPCError(-1, "odd code", None)),
    "nan": lambda o: float("nan"),
    "inf": lambda o: [1, float("inf")],
    "path": lambda o: Path("/tmp"),
    "odd": lambda o: Odd(),
    "value": lambda o: o.get("value"),
    "stderr": lambda o: sys.stderr.write("noise on stderr\n") and None,
    "stdout": lambda o: print("noise on stdout") or None,
}


class QuirkHandler(server.ProjectAPIHandler):
    def server_info_query(self, tvm_version):
        if tvm_version == "unsupported":
            raise server.UnsupportedTVMVersionError()
        if tvm_version == "mapping":
            return {"platform_name": "quirk", "is_template": False, "model_library_format_path": None,
                    "project_options": [{"name": "m", "type": "int", "required": ["build"]}],
                    "protocol_version": 7}
        if tvm_version == "path":
            mlf = Path("/abs/model.tar")
        elif tvm_version == "none":
            mlf = None
        else:
            mlf = ""
        return server.ServerInfo("quirk", True, mlf, [
            server.ProjectOption("verbose", choices=(True, False), help="v0.8 bool"),
            server.ProjectOption("kind", choices=("a", "b"), help="v0.8 str"),
            server.ProjectOption("count", choices=[1, 2, 3], help="v0.8 int"),
            server.ProjectOption("free", help="v0.8 no choices"),
            server.ProjectOption("board", type="str", required=["generate_project"],
                                 optional=["flash", "open_transport"], choices=["x"], help="v0.9"),
            server.ProjectOption("size", type="int", default=5, optional=["build"], help="v0.9 int"),
        ])

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        return {"types": [type(p).__name__ for p in (model_library_format_path, standalone_crt_dir, project_dir)],
                "paths": [str(model_library_format_path), str(standalone_crt_dir), str(project_dir)],
                "options": options}

    def build(self, options):
        return ACTIONS[options.get("action", "value")](options)

    def flash(self, options):
        if options.get("last_write"):
            return getattr(self, "last_write", None)
        return options

    def open_transport(self, options):
        kind = options.get("timeouts")
        if kind == "none":
            return None
        if kind == "mapping":
            return {"session_established_timeout_sec": 3, "session_start_timeout_sec": 2,
                    "session_start_retry_timeout_sec": 1}
        return server.TransportTimeouts(0.5, 10, 0)

    def close_transport(self):
        return None

    def read_transport(self, n, timeout_sec):
        if n == 0:
            return "not bytes"
        if n > 1 << 20:
            raise ValueError("n too large for this test server")
        return bytes(range(256)) * (n // 256) + bytes(range(n % 256))

    def write_transport(self, data, timeout_sec):
        # The reply is always null (TVM's server drops this value); keep what arrived so a test
        # can ask for it with flash({"last_write": true}).
        self.last_write = {"hex": data.hex(), "timeout_sec": timeout_sec}
        return self.last_write


if __name__ == "__main__":
    server.main(QuirkHandler())
