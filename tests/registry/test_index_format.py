"""Index files: the curated index, validation of malformed ones, extra indexes over HTTP."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from microtvm_registry.registry import extra_indexes, index_format
from microtvm_registry.registry.catalog import load_catalog
from microtvm_registry.errors import IndexFormatError, MicrotvmError, UnsafeSourceError
from microtvm_registry.registry.models import Origin, PackagedSource
from microtvm_registry.registry.index_format import parse_index
from registry_support import (
    git_version_table,
    index_text,
    make_template_repo,
    run_cli,
    template_table,
    write_index,
)
from support.servers import HttpServer

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tools" / "data" / "apache-tvm-microtvm-templates.json"
CURATED = ROOT / "index" / "apache-tvm.toml"
LOCAL = Origin("index", "t", "t.toml")
FOLDERS = {
    "apache-tvm/zephyr": "apps/microtvm/zephyr/template_project",
    "apache-tvm/arduino": "apps/microtvm/arduino/template_project",
    "apache-tvm/crt": "src/runtime/crt/host",
}


# ------------------------------------------------------------------------------ curated index


def test_curated_index_lists_every_release_of_the_data_file():
    data = json.loads(DATA.read_text())
    index = index_format.load_index_file(CURATED, Origin("packaged", "apache-tvm", str(CURATED), trusted=True), allow_packaged=True)
    by_name = {t.name: t for t in index.templates}
    assert sorted(by_name) == sorted(FOLDERS)
    tags = [r["tag"] for r in data["releases"]]
    assert tags[0] == "v0.8.0" and tags[-1] == "v0.18.0" and len(tags) == 11
    for name, folder in FOLDERS.items():
        versions = {v.version: v for v in by_name[name].versions}
        assert sorted(versions, key=lambda s: tuple(map(int, s.split(".")))) == [t[1:] for t in tags]
        for release in data["releases"]:
            v = versions[release["tag"][1:]]
            src = v.source
            assert src.url == "https://github.com/apache/tvm.git"
            assert src.commit == release["commit"] and src.ref == release["tag"]
            assert src.subdir == folder
            assert src.tree == release["paths"][folder]["object"]
            new = tuple(map(int, release["tag"][1:].split("."))) >= (0, 12, 0)
            if name != "apache-tvm/crt" and new:
                (extra,) = src.extra_files
                assert (extra.path, extra.dest) == ("python/tvm/micro/project_api/server.py", "server.py")
                assert extra.blob == release["paths"]["python/tvm/micro/project_api/server.py"]["object"]
                assert v.entry == "launch_microtvm_api_server.sh"
            else:
                assert src.extra_files == ()
                assert v.entry == "microtvm_api_server.py"
            tools = set(v.requires.tools)
            if name == "apache-tvm/crt":
                assert {"make", "c++|g++|clang++"} <= tools and (("cmake" in tools) == new)
                assert "tvm.micro.project_api.server" in v.note
            elif name == "apache-tvm/zephyr":
                assert {"west", "cmake"} <= tools and "pyserial" in v.requires.pip
            else:
                assert "arduino-cli" in tools and "pyserial" in v.requires.pip
                assert (("packaging" in v.requires.pip) == new)


def test_curated_index_is_what_the_generator_writes():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_curated_index.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_packaged_catalog_has_curated_and_host():
    catalog = load_catalog(extras=False, plugins=False)
    assert {"apache-tvm/zephyr", "apache-tvm/arduino", "apache-tvm/crt", "host"} <= set(catalog.names())
    host = catalog.get("host").latest
    assert isinstance(host.source, PackagedSource) and host.platform == "host" and host.origin.trusted
    assert catalog.get("apache-tvm/zephyr").latest.version == "0.18.0"


# ------------------------------------------------------------------------------ validation

GOOD_GIT = {
    "version": "1.0.0",
    "git": "https://example.invalid/repo.git",
    "commit": "a" * 40,
    "subdir": "tmpl",
    "tree": "b" * 40,
}


def _doc(version_overrides=None, drop=(), template_overrides=None, top=None):
    version = dict(GOOD_GIT)
    version.update(version_overrides or {})
    for key in drop:
        version.pop(key, None)
    template = {"name": "acme/one", "description": "d", "platform": "p", "version": [version]}
    template.update(template_overrides or {})
    doc = {"schema": 1, "template": [{"name": "acme/zero", "platform": "p", "version": [dict(GOOD_GIT)]}, template]}
    doc.update(top or {})
    return doc


@pytest.mark.parametrize(
    "doc, key, problem",
    [
        (_doc({"commit": "xyz"}), "template[1].version[0].commit", "expected 40 hex digits"),
        (_doc({"tree": "B" * 40}), "template[1].version[0].tree", "expected 40 hex digits"),
        (_doc(drop=["tree"]), "template[1].version[0].tree", "missing"),
        (_doc(drop=["commit"]), "template[1].version[0].commit", "missing"),
        (_doc({"subdir": "../escape"}), "template[1].version[0].subdir", "'..'"),
        (_doc({"subdir": "/abs"}), "template[1].version[0].subdir", "relative"),
        (_doc({"subdir": 3}), "template[1].version[0].subdir", "expected a string"),
        (_doc({"version": "one"}), "template[1].version[0].version", "PEP 440"),
        (_doc({"version": 1.0}), "template[1].version[0].version", "expected a string"),
        (_doc({"url": "https://x.invalid/a.tgz"}), "template[1].version[0]", "give one source"),
        (_doc(drop=["git"]), "template[1].version[0]", "no source"),
        (_doc({"url": "https://x/a.tgz", "sha256": "0" * 63, "tree": "b" * 40}, drop=["git", "commit"]), "template[1].version[0].sha256", "64 hex"),
        (_doc({"requires": {"pip": ["not a requirement!!"]}}), "template[1].version[0].requires.pip[0]", "PEP 508"),
        (_doc({"requires": {"tools": "cmake"}}), "template[1].version[0].requires.tools", "list of strings"),
        (_doc({"requires": {"python": "three"}}), "template[1].version[0].requires.python", "specifier"),
        (_doc({"extra": [{"path": "a", "dest": "b", "blob": "nope"}]}), "template[1].version[0].extra[0].blob", "40 hex"),
        (_doc({"extra": {"path": "a"}}), "template[1].version[0].extra", "array of tables"),
        (_doc({"git": "ext::sh -c touch% /tmp/pwned"}), "template[1].version[0]", "refused"),
        (_doc({"packaged": "templates/x"}, drop=["git"]), "template[1].version[0].packaged", "only indexes shipped"),
        (_doc({"path": "/somewhere"}, drop=["git"]), "template[1].version[0].path", "only allowed from a plugin"),
        (_doc(template_overrides={"name": "bad name!"}), "template[1].name", "NAME or VENDOR/NAME"),
        (_doc(template_overrides={"name": "acme/zero"}), "template[1].name", "listed twice"),
        (_doc(template_overrides={"version": []}), "template[1].version", "at least one"),
        (_doc(template_overrides={"platform": ["p"]}), "template[1].platform", "expected a string"),
        (_doc(template_overrides={"version": [GOOD_GIT, GOOD_GIT]}), "template[1].version[1].version", "listed twice"),
        (_doc(top={"schema": "1"}), "schema", "expected an integer"),
        (_doc(top={"schema": 2}), "schema", "upgrade"),
        ({"template": []}, "schema", "missing"),
        (_doc(top={"template": {"name": "x"}}), "template", "array of tables"),
    ],
)
def test_malformed_index_names_file_and_key(tmp_path, doc, key, problem):
    import tomli_w

    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(doc))
    with pytest.raises(IndexFormatError) as info:
        index_format.load_index_file(path, LOCAL)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message
    assert "\n" not in message


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("schema = 1\n[[template]\nname = 'x'\n")
    with pytest.raises(IndexFormatError, match=r"broken\.toml: not valid TOML"):
        index_format.load_index_file(path, LOCAL)


def test_unknown_keys_are_allowed_and_known_ones_still_checked(tmp_path):
    doc = _doc({"future_key": {"anything": [1, 2]}}, top={"generator": "v9"}, template_overrides={"homepage": "x"})
    index = parse_index(index_text(doc["template"]).replace("schema = 1", "schema = 1\ngenerator = 'v9'"), "t.toml", LOCAL)
    assert [t.name for t in index.templates] == ["acme/zero", "acme/one"]


def test_example_message_from_the_design():
    doc = {"schema": 1, "template": [
        {"name": f"t{i}", "platform": "p", "version": [dict(GOOD_GIT)]} for i in range(3)
    ]}
    doc["template"][2]["version"][0]["commit"] = "123"
    import tomli_w

    with pytest.raises(IndexFormatError) as info:
        parse_index(tomli_w.dumps(doc), "index/apache-tvm.toml", LOCAL)
    assert str(info.value) == "index/apache-tvm.toml: template[2].version[0].commit: expected 40 hex digits"


def test_relative_sources_resolve_against_the_index_location(tmp_path):
    doc = {"schema": 1, "template": [{"name": "a", "platform": "p", "version": [
        dict(GOOD_GIT, git="repos/a.git"),
        {"version": "2.0", "url": "archives/a.tar.gz", "sha256": "0" * 64, "tree": "b" * 40},
    ]}]}
    import tomli_w

    text = tomli_w.dumps(doc)
    local = parse_index(text, "x", LOCAL, base=str(tmp_path / "idx" / "index.toml"))
    by_version = {v.version: v.source for v in local.templates[0].versions}
    assert by_version["1.0.0"].url == str(tmp_path / "idx" / "repos" / "a.git")
    remote = parse_index(text, "x", Origin("index", "r", "http://h/x/index.toml", remote=True), base="http://h/x/index.toml")
    by_version = {v.version: v.source for v in remote.templates[0].versions}
    assert by_version["2.0"].url == "http://h/x/archives/a.tar.gz"
    assert by_version["1.0.0"].url == "http://h/x/repos/a.git"


# ------------------------------------------------------------------------------ extra indexes


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    return path, make_template_repo(path, ["1.0.0", "1.1.0"])


def test_local_extra_index_add_list_remove(tmp_path, repo):
    path, versions = repo
    index_file = write_index(tmp_path / "acme.toml", [template_table("acme/blinky", [git_version_table(str(path), versions["1.0.0"])])])
    added = extra_indexes.add_extra_index("acme", str(index_file))
    assert [t.name for t in added.templates] == ["acme/blinky"]
    assert [e.name for e in extra_indexes.list_extra_indexes()] == ["acme"]
    catalog = load_catalog(plugins=False)
    assert "acme/blinky" in catalog.names() and "host" in catalog.names()
    assert not catalog.get("acme/blinky").latest.origin.trusted
    with pytest.raises(MicrotvmError, match="already exists"):
        extra_indexes.add_extra_index("acme", str(index_file))
    with pytest.raises(MicrotvmError, match="taken by a packaged index"):
        extra_indexes.add_extra_index("apache-tvm", str(index_file))
    extra_indexes.remove_extra_index("acme")
    assert extra_indexes.list_extra_indexes() == []
    assert "acme/blinky" not in load_catalog(plugins=False).names()
    with pytest.raises(MicrotvmError, match="no extra index named 'acme'"):
        extra_indexes.remove_extra_index("acme")


def test_adding_a_broken_index_fails_and_records_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\n[[template]]\nname = 3\n")
    with pytest.raises(IndexFormatError, match=r"bad\.toml: template\[0\]\.name"):
        extra_indexes.add_extra_index("bad", str(bad))
    assert extra_indexes.list_extra_indexes() == []


def test_http_index_etag_revalidation_and_offline_copy(tmp_path, repo):
    path, versions = repo
    with HttpServer(tmp_path / "www") as server:
        server.put("index.toml", index_text([template_table("acme/blinky", [git_version_table("https://example.invalid/r.git", versions["1.0.0"])])]))
        extra_indexes.add_extra_index("acme", server.url("index.toml"))
        assert server.request_count("/index.toml") == 1
        # Normal reads use the last good copy: no request.
        assert "acme/blinky" in load_catalog(plugins=False).names()
        assert server.request_count("/index.toml") == 1
        # update revalidates with If-None-Match and gets 304.
        report = extra_indexes.update_extra_indexes()
        assert report[0][1] is True
        last = server.requests[-1]
        assert last.headers.get("If-None-Match", "").startswith('"')
        # A changed index is picked up by update.
        server.put("index.toml", index_text([template_table("acme/blinky", [git_version_table("https://example.invalid/r.git", versions["1.1.0"])])]))
        extra_indexes.update_extra_indexes()
        assert load_catalog(plugins=False).get("acme/blinky").latest.version == "1.1.0"
        count = server.request_count()
    # Server gone: offline and online reads still use the last good copy.
    assert load_catalog(offline=True, plugins=False).get("acme/blinky").latest.version == "1.1.0"
    assert load_catalog(plugins=False).get("acme/blinky").latest.version == "1.1.0"
    assert count == 3


def test_http_index_retries_transient_errors(tmp_path, repo):
    _path, versions = repo
    with HttpServer(tmp_path / "www") as server:
        server.put("index.toml", index_text([template_table("acme/blinky", [git_version_table("https://example.invalid/r.git", versions["1.0.0"])])]))
        server.add_fault("/index.toml", status=503, times=2)
        extra_indexes.add_extra_index("acme", server.url("index.toml"))
        assert server.request_count("/index.toml") == 3


def test_broken_or_unreachable_extra_index_warns_and_packaged_still_lists(tmp_path, repo):
    _path, versions = repo
    with HttpServer(tmp_path / "www") as server:
        server.put("index.toml", index_text([template_table("acme/blinky", [git_version_table("https://example.invalid/r.git", versions["1.0.0"])])]))
        extra_indexes.add_extra_index("acme", server.url("index.toml"))
        # A bad new copy (invalid TOML) does not replace the good one.
        server.put("index.toml", "schema = 1\n[[template]\n")
        proc = run_cli("index", "update")
        assert proc.returncode == 1
        assert "acme: failed:" in proc.stdout and "keeping the copy from" in proc.stdout
        # HTTP errors (after retries) on update: one-line report, copy kept.
        server.add_fault("/index.toml", status=500, times=10)
        proc = run_cli("index", "update")
        assert "HTTP 500" in proc.stdout
        proc = run_cli("list")
        assert proc.returncode == 0
        assert "acme/blinky" in proc.stdout and "host" in proc.stdout
    # An extra index that was never fetched and whose server is down: warning, packaged listed.
    extra_indexes.remove_extra_index("acme")
    config = extra_indexes._config_path()
    config.write_text(f'[[index]]\nname = "gone"\nlocation = "{server.url("index.toml")}"\n')
    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    assert "apache-tvm/zephyr" in proc.stdout and "host" in proc.stdout
    warnings = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("microtvm: warning: ") and "'gone'" in warnings[0]
    assert "skipped" in warnings[0]
    proc = run_cli("--offline", "list")
    assert proc.returncode == 0 and "no cached copy" in proc.stderr


def test_broken_local_extra_index_warns(tmp_path, repo):
    path, versions = repo
    index_file = write_index(tmp_path / "acme.toml", [template_table("acme/blinky", [git_version_table(str(path), versions["1.0.0"])])])
    extra_indexes.add_extra_index("acme", str(index_file))
    index_file.write_text("schema = 1\n[[template]]\nname = 'acme/blinky'\nplatform = 1\n")
    proc = run_cli("list")
    assert proc.returncode == 0
    assert "acme/blinky" in proc.stdout  # the last good copy
    assert "acme.toml: template[0].platform: expected a string" in proc.stderr
    assert "using the copy from" in proc.stderr


def test_remote_index_may_not_name_local_sources(tmp_path, repo):
    path, versions = repo
    with HttpServer(tmp_path / "www") as server:
        server.put("index.toml", index_text([
            template_table("evil/local", [git_version_table(f"file://{path}", versions["1.0.0"])]),
            template_table("evil/plain", [git_version_table(str(path), versions["1.0.0"])]),
        ]))
        extra_indexes.add_extra_index("evil", server.url("index.toml"))
    from microtvm_registry.template_paths import get_template

    for name in ("evil/local", "evil/plain"):
        with pytest.raises(UnsafeSourceError, match="remote index"):
            get_template(name)
        proc = run_cli("fetch", name)
        assert proc.returncode == 1 and "remote index" in proc.stderr
    from microtvm_registry.cache.store import Cache

    assert Cache().list_entries() == []


def test_a_parse_memo_in_the_cache_never_repoints_a_packaged_index():
    """Whoever can write the cache could write a memo that keeps the curated text but changes
    what it means; packaged indexes (and lockfiles, config) are never read through one."""
    import json
    import zlib

    from microtvm_registry import get_packaged_resource
    from microtvm_registry.dirs import cache_dir
    from microtvm_registry.files import PARSED_TOML_DIR
    from microtvm_registry.registry.packaged_indexes import _PACKAGED_MEMO, packaged_indexes
    from microtvm_registry.registry.resolve import resolve

    from microtvm_registry.files import load_toml_bytes

    raw = get_packaged_resource("index/apache-tvm.toml").read_bytes()
    doc = load_toml_bytes(raw)
    for template in doc["template"]:
        for version in template["version"]:
            version["git"] = "https://evil.example.com/tvm.git"
    memo = cache_dir() / PARSED_TOML_DIR / f"{zlib.crc32(raw):08x}-{len(raw)}.json"
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"toml": raw.decode(), "doc": doc}))
    _PACKAGED_MEMO.clear()
    assert resolve("apache-tvm/zephyr@0.18.0", lock=None).version.source.url == "https://github.com/apache/tvm.git"
    assert all("evil" not in getattr(v.source, "url", "") for i in packaged_indexes() for t in i.templates for v in t.versions)


def test_the_parses_shipped_beside_the_packaged_indexes_are_current():
    """index/<name>.parsed.json is what warm commands read instead of the TOML; a stale one
    would only cost speed (it is checked by hash), but keep them current."""
    import hashlib

    from microtvm_registry import get_packaged_resource
    from microtvm_registry.files import load_toml_bytes

    folder = get_packaged_resource("index")
    tomls = sorted(folder.glob("*.toml"))
    assert tomls
    for toml in tomls:
        shipped = json.loads(toml.with_suffix(".parsed.json").read_text())
        raw = toml.read_bytes()
        assert shipped["sha256"] == hashlib.sha256(raw).hexdigest(), f"{toml.name} changed: run python tools/parse_indexes.py"
        assert shipped["doc"] == load_toml_bytes(raw)
