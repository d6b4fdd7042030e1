"""Kernel libraries in the registry: the curated [[library]] entry for arm/cmsis-nn, fetched from
the local mirror through --git-mirror (content id = the tree of Include/ + Source/ + LICENSE as
materialized), listed, shown, pinned in microtvm.lock and synced like a template, never run, and
refused in one line (nothing left in the cache) when its content is not what the index says."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from microtvm_registry.errors import IndexFormatError, UnsafeSourceError
from microtvm_registry.registry.index_format import load_index_file, parse_index
from microtvm_registry.registry.models import Origin
from registry_support import run_cli
from support import cmsis_nn as cn
from support.servers import make_repo, rev_parse

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CURATED = ROOT / "index" / "kernel-libraries.toml"
LOCAL = Origin("index", "t", "t.toml")

needs_mirror = pytest.mark.skipif(not cn.MIRROR.is_dir(), reason=f"{cn.MIRROR} is absent (the local CMSIS-NN mirror lives in ../shared/mirrors)")


def test_the_curated_library_index_names_the_mirror_commits():
    index = load_index_file(CURATED, Origin("packaged", "kernel-libraries", str(CURATED), trusted=True), allow_packaged=True)
    (lib,) = index.templates
    assert (lib.name, lib.kind, lib.license) == ("arm/cmsis-nn", "library", "Apache-2.0")
    commits = {v.version: v.source.commit[:8] for v in lib.versions}
    assert commits == {"7.0.0.post20260715": "99f736a6", "7.0.0.post20260617": "4ab83cc3", "7.0.0": "22080c68"}
    for v in lib.versions:
        assert v.is_library and v.source.url == cn.UPSTREAM and v.source.paths == ("Include", "Source", "LICENSE")
        assert v.source.tree == cn.content_id(v.version)


@needs_mirror
@pytest.mark.parametrize("version", cn.VERSIONS)
def test_each_version_the_index_names_is_the_mirror_tree_it_records(version):
    """The index's content ids are not trusted on faith: fetched from the mirror (as a user
    behind one would), each version's materialized folder hashes to its `tree`."""
    out = run_cli("--git-mirror", cn.MIRROR_SETTING, "fetch", f"arm/cmsis-nn@=={version}")
    assert out.returncode == 0, out.stderr
    name, got, content_id, folder = out.stdout.split()
    assert (name, got, content_id) == ("arm/cmsis-nn", version, cn.content_id(version))
    assert sorted(p.name for p in Path(folder).iterdir()) == ["Include", "LICENSE", "Source"]
    assert (Path(folder) / "Include" / "arm_nnfunctions.h").is_file()


@needs_mirror
def test_list_show_lock_and_sync_treat_it_as_they_treat_templates(tmp_path, isolated_environment):
    rows = {r["name"]: r for r in json.loads(run_cli("list", "--json").stdout)}
    assert rows["arm/cmsis-nn"]["kind"] == "library" and rows["host"]["kind"] == "template"
    listing = run_cli("list").stdout.splitlines()
    assert "KIND" in listing[0] and any(line.startswith("arm/cmsis-nn") and " library " in line for line in listing)
    shown = run_cli("show", "arm/cmsis-nn").stdout
    assert "license:    Apache-2.0" in shown and "kind:       library" in shown and "Include + Source + LICENSE" in shown

    app = tmp_path / "app"
    app.mkdir()
    out = run_cli("--git-mirror", cn.MIRROR_SETTING, "lock", "arm/cmsis-nn@==7.0.0", cwd=app)
    assert out.returncode == 0, out.stderr
    lock = tomllib.loads((app / "microtvm.lock").read_text())
    (entry,) = [e for e in lock["template"] if e["name"] == "arm/cmsis-nn"]
    assert (entry["version"], entry["tree"], entry["kind"]) == ("7.0.0", cn.content_id("7.0.0"), "library")
    assert entry["paths"] == ["Include", "LICENSE", "Source"] or entry["paths"] == ["Include", "Source", "LICENSE"]

    # A fresh cache: sync fetches the pin, and then everything works offline.
    fresh = {"MICROTVM_REGISTRY_CACHE": str(tmp_path / "fresh-cache")}
    out = run_cli("--git-mirror", cn.MIRROR_SETTING, "sync", cwd=app, env=fresh)
    assert out.returncode == 0, out.stderr
    out = run_cli("--offline", "path", "arm/cmsis-nn", cwd=app, env=fresh)
    assert out.returncode == 0 and out.stdout.strip().endswith(cn.content_id("7.0.0")), out.stderr
    cached = run_cli("cache", "list", "--json", env=fresh)
    assert cn.content_id("7.0.0") in cached.stdout


@needs_mirror
def test_a_library_is_never_run(tmp_path):
    out = run_cli("--git-mirror", cn.MIRROR_SETTING, "create-project", "arm/cmsis-nn", str(tmp_path / "p"), "--mlf", str(tmp_path / "none.tar"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "arm/cmsis-nn is a kernel library" in out.stderr and "not a template" in out.stderr
    assert not (tmp_path / "p").exists()


def _library_repo(path: Path, readme: bool = True) -> str:
    files = {"Include/lib.h": "int lib(void);\n", "Source/lib.c": "int lib(void) { return 1; }\n", "LICENSE": "Apache-2.0\n"}
    if readme:
        files["README.md"] = "not part of what a build needs\n"
    return make_repo(path, files)


def _library_index(path: Path, url: str, commit: str, tree: str) -> Path:
    path.write_text(
        'schema = 1\n[[library]]\nname = "acme/kernels"\ndescription = "test kernels"\nlicense = "MIT"\n'
        f'[[library.version]]\nversion = "1.0.0"\ngit = "{url}"\ncommit = "{commit}"\n'
        f'paths = ["Include", "Source", "LICENSE"]\ntree = "{tree}"\n'
    )
    return path


def test_an_index_of_our_own_names_a_library_and_its_tree_is_verified(tmp_path, isolated_environment):
    commit = _library_repo(tmp_path / "repo")
    # The tree of a repository holding just the three names is the materialized folder's id.
    alone = _library_repo(tmp_path / "alone", readme=False)
    tree = rev_parse(tmp_path / "alone", f"{alone}^{{tree}}")
    assert tree != rev_parse(tmp_path / "repo", f"{commit}^{{tree}}")
    good = _library_index(tmp_path / "good.toml", f"file://{tmp_path / 'repo'}", commit, tree)
    assert run_cli("index", "add", "kernels", str(good)).returncode == 0
    out = run_cli("fetch", "acme/kernels")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[2] == tree

    wrong = "0" * 39 + "1"
    bad = _library_index(tmp_path / "bad.toml", f"file://{tmp_path / 'repo'}", commit, wrong)
    cache = tmp_path / "other-cache"
    out = run_cli("index", "add", "bad", str(bad), env={"MICROTVM_REGISTRY_CACHE": str(cache), "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert out.returncode == 0, out.stderr
    out = run_cli("fetch", "acme/kernels", env={"MICROTVM_REGISTRY_CACHE": str(cache), "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    errors = [line for line in out.stderr.splitlines() if not line.startswith("fetching ")]  # the progress line
    assert out.returncode == 1 and len(errors) == 1, out.stderr
    assert wrong[:12] in errors[0] and tree[:12] in errors[0]
    templates = cache / "templates"
    assert not templates.exists() or [p.name for p in templates.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "version_keys, fragment",
    [
        ('paths = ["../Include"]', "it must stay inside its folder"),
        ('paths = ["Include/x"]', "must be one top-level file or folder name"),
        ('paths = ["Include", "Include"]', "twice"),
        ('paths = ["Include"]\nsubdir = "x"', "not both"),
    ],
)
def test_malformed_library_paths_are_one_line(version_keys, fragment):
    text = (
        'schema = 1\n[[library]]\nname = "acme/kernels"\nlicense = "MIT"\n[[library.version]]\nversion = "1.0.0"\n'
        f'git = "https://example.invalid/k.git"\ncommit = "{"a" * 40}"\ntree = "{"b" * 40}"\n{version_keys}\n'
    )
    with pytest.raises((IndexFormatError, UnsafeSourceError)) as err:
        parse_index(text, "t.toml", LOCAL)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_library_table_takes_no_platform():
    text = (
        'schema = 1\n[[library]]\nname = "acme/kernels"\nplatform = "arm"\n[[library.version]]\nversion = "1.0.0"\n'
        f'git = "https://example.invalid/k.git"\ncommit = "{"a" * 40}"\ntree = "{"b" * 40}"\npaths = ["Source"]\n'
    )
    index = parse_index(text, "t.toml", LOCAL)  # unknown keys are ignored (and logged), as for templates
    (lib,) = index.templates
    assert lib.kind == "library" and lib.platform == ""
