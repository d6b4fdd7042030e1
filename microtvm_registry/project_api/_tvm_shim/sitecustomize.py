"""microtvm-registry bootstrap: let a Project API server import ``tvm.micro.project_api.server``.

TVM's own templates (the v0.8-v0.11 ones, and the CRT host template of every release) start with
``from tvm.micro.project_api import server``. Today's apache-tvm wheels have no ``tvm.micro``, and
many users have no TVM at all, so those templates could not start. The Project API client puts the
folder holding this file first on the server's PYTHONPATH; Python then imports it at start-up as
``sitecustomize``. It:

* appends a meta-path finder to ``sys.meta_path``. Finders run in order, so the normal path
  finder is asked first: a real TVM that has ``tvm.micro.project_api.server`` always wins. Only
  what nothing else provides is supplied here: ``tvm.micro.project_api.server`` is microtvm_registry's own stdlib-only server.py
  (loaded from its file, so microtvm_registry need not be importable in the server's Python), and
  ``tvm``, ``tvm.micro``, ``tvm.micro.project_api`` are empty packages when missing.
* puts one more finder first, for ``tvm`` alone: a ``tvm`` on the path without
  ``micro/project_api/server.py`` (apache-tvm 0.19+, whose import loads a large native library
  for seconds) is not imported at all; the empty package stands in for it, in the server only.
* removes its folder from ``sys.path`` and from the PYTHONPATH that the server's own children
  inherit (make, west, pip...), so the shim reaches the server process and nothing else.
* runs the next ``sitecustomize`` on the path, if there is one, so it never hides another one.

Keep this file small, dependency-free and compatible with old Python 3 versions: launchers may run
it under a different interpreter than the client's.
"""
import os
import sys


def _microtvm_registry_install_tvm_shim():
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    server_py = os.path.join(os.path.dirname(here), "server.py")
    packages = ("tvm", "tvm.micro", "tvm.micro.project_api")
    server_name = "tvm.micro.project_api.server"

    class MicrotvmRegistryTVMShimFinder(object):
        """Provides the names above only when no other finder on sys.meta_path does."""

        def find_spec(self, fullname, path=None, target=None):
            if fullname == server_name:
                return importlib.util.spec_from_file_location(fullname, server_py)
            if fullname in packages:
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            return None  # the default module object

        def exec_module(self, module):
            module.__doc__ = "Empty package provided by microtvm-registry's Project API shim."

    class MicrotvmRegistryTVMFirstFinder(object):
        """Asked first, for ``tvm`` only: when the ``tvm`` the path would load has no
        ``micro/project_api/server.py`` (apache-tvm 0.19+), importing it would only cost seconds
        (its native library) to learn that, so the empty package is supplied instead. Decided by
        looking at files, never by importing: a TVM with microTVM is left to load as usual."""

        def find_spec(self, fullname, path=None, target=None):
            if fullname != "tvm":
                return None
            real = importlib.machinery.PathFinder.find_spec("tvm", sys.path)
            if real is None:
                return None  # no tvm at all: the finder at the end supplies the empty package
            for location in real.submodule_search_locations or ():
                if os.path.isfile(os.path.join(location, "micro", "project_api", "server.py")):
                    return None
            return importlib.machinery.ModuleSpec(fullname, MicrotvmRegistryTVMShimFinder(), is_package=True)

    sys.meta_path.insert(0, MicrotvmRegistryTVMFirstFinder())
    sys.meta_path.append(MicrotvmRegistryTVMShimFinder())

    def same(entry):
        try:
            return os.path.abspath(entry or os.curdir) == here
        except Exception:
            return False

    sys.path[:] = [p for p in sys.path if not same(p)]
    pythonpath = os.environ.get("PYTHONPATH")
    if pythonpath is not None:
        rest = [p for p in pythonpath.split(os.pathsep) if not same(p)]
        if rest:
            os.environ["PYTHONPATH"] = os.pathsep.join(rest)
        else:
            del os.environ["PYTHONPATH"]

    # Chain to the sitecustomize we are hiding (a distribution's or a user's), if any.
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_microtvm_registry_install_tvm_shim()
del _microtvm_registry_install_tvm_shim
