"""microtvm-registry: microTVM template projects for people who installed with pip.

The public surface is small on purpose: find a packaged resource, get a template folder by
spec, or get TVM's per-platform template folder. Everything heavier (git, HTTP, the Project API
client) is imported only when used, so importing this package stays cheap.
"""
from __future__ import annotations

from pathlib import Path

from ._version import __version__

__all__ = [
    "__version__",
    "get_packaged_resource",
    "get_template",
    "get_microtvm_template_projects",
]


def get_packaged_resource(relpath: str) -> Path:
    """A file or folder shipped inside the wheel (``templates/host``, ``index/apache-tvm.toml``)."""
    from .packaged import get_packaged_resource as _impl

    return _impl(relpath)


def get_template(spec: str, offline: bool = False) -> Path:
    """The local, verified folder of the template ``spec`` names, fetching it unless offline."""
    from .template_paths import get_template as _impl

    return _impl(spec, offline=offline)


def get_microtvm_template_projects(platform: str) -> Path:
    """TVM's function of the same name: the template folder for "crt", "zephyr" or "arduino"."""
    from .template_paths import get_microtvm_template_projects as _impl

    return _impl(platform)
