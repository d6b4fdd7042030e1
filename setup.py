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
    sys.path.insert(0, HERE)
    try:
        from microtvm_registry.contentid import tree_id
    finally:
        sys.path.pop(0)
    tomllib = _tomllib()
    with open(os.path.join(HERE, "index", "packaged.toml"), "rb") as fh:
        doc = tomllib.load(fh)
    ids = {}
    for template in doc.get("template", []):
        for version in template.get("version", []):
            relpath = version.get("packaged")
            if not relpath:
                continue
            mounts = {inc.rstrip("/").rsplit("/", 1)[-1]: os.path.join(HERE, inc) for inc in version.get("include", [])}
            ids[relpath] = tree_id(os.path.join(HERE, relpath), mounts, skip_dirs=("__pycache__",))
    return ids


def _tomllib():
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib


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
