"""The smallest whole Project API server a test can start: ``HEADER`` defines ``handler(**methods)``
(every method answered, any of them replaced by keyword), and a test appends what it needs,
ending with ``server.main(handler(...))``."""
import textwrap

HEADER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from microtvm_registry.project_api import server

    def handler(**kw):
        class H(server.ProjectAPIHandler):
            def server_info_query(self, tvm_version):
                return server.ServerInfo(platform_name="t", is_template=True, model_library_format_path="", project_options=[])
            def generate_project(self, *a): pass
            def build(self, options): pass
            def flash(self, options): pass
            def open_transport(self, options): pass
            def close_transport(self): pass
            def read_transport(self, n, timeout_sec): pass
            def write_transport(self, data, timeout_sec): pass
        for k, v in kw.items():
            setattr(H, k, v)
        return H()
    """
)
