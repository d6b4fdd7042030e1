"""Build hook: record the content id of every packaged template in the wheel.

Everything else is in pyproject.toml. The ids are what the templates hash to when the wheel is
built (templates/<name> with the shared folders its packaged-index entry includes), written as
``microtvm_registry/data/packaged-ids.json``. At run time a packaged template is trusted only
while it still hashes to its recorded id, so an edited copy inside site-packages (a user who
followed ``cd "$(microtvm path host)"`` and changed a file) is no longer run as "packaged".
"""
import json
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _packaged_ids():
    """Each packaged template's content id, computed by the package's own function (from this
    checkout's files: the build runs before anything is installed)."""
    sys.path.insert(0, HERE)
    try:
        from microtvm_registry.packaged import packaged_content_id
    finally:
        sys.path.pop(0)
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    with open(os.path.join(HERE, "index", "packaged.toml"), "rb") as fh:
        doc = tomllib.load(fh)
    return {
        version["packaged"]: packaged_content_id(version["packaged"], version.get("include", ()))
        for template in doc.get("template", [])
        for version in template.get("version", [])
        if version.get("packaged")
    }


class BuildPyWithPackagedIds(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install uses the checkout in place: nothing to record
            return
        data = os.path.join(self.build_lib, "microtvm_registry", "data")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(data, "packaged-ids.json"), "w", encoding="utf-8") as fh:
            json.dump(_packaged_ids(), fh, indent=1, sort_keys=True)


setup(cmdclass={"build_py": BuildPyWithPackagedIds})
