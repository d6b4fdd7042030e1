"""Spec parsing and resolution: names, vendors, versions, suggestions, and the lockfile's say."""
from __future__ import annotations

import pytest

from microtvm_registry.registry import packaged_indexes
from microtvm_registry.errors import LockfileError, SpecError, TemplateNotFoundError
from microtvm_registry.registry.catalog import Catalog
from microtvm_registry.registry.models import Origin
from microtvm_registry.registry.index_format import parse_index
from microtvm_registry.registry.lockfile import LockEntry, Lockfile
from microtvm_registry.registry.resolve import parse_spec, resolve
from registry_support import index_text, template_table

COMMIT, TREE = "a" * 40, "b" * 40


def _v(version: str) -> dict:
    return {"version": version, "git": "https://example.invalid/r.git", "commit": COMMIT, "subdir": "t", "tree": TREE}


def _catalog(*indexes) -> Catalog:
    parsed = [
        parse_index(index_text(templates), f"{name}.toml", Origin("index", name, f"{name}.toml"))
        for name, templates in indexes
    ]
    return Catalog(packaged_indexes.packaged_indexes() + parsed)


ACME = ("acme", [
    template_table("acme/zephyr", [_v("1.0"), _v("2.0"), _v("2.1rc1")]),
    template_table("acme/blinky", [_v("0.9"), _v("1.2.0"), _v("1.10.0")]),
    template_table("acme/beta", [_v("1.0a1"), _v("1.0b2")]),
])


@pytest.mark.parametrize(
    "text, name, version, ok, not_ok",
    [
        ("host", "host", None, ["0.0.1", "99"], []),
        ("apache-tvm/zephyr", "apache-tvm/zephyr", None, ["0.8.0"], []),
        ("zephyr@0.18.0", "zephyr", "==0.18.0", ["0.18.0", "0.18"], ["0.17.0"]),
        ("zephyr@v0.12", "zephyr", "==0.12", ["0.12.0"], ["0.12.1"]),
        ("apache-tvm/zephyr@>=0.12,<0.19", "apache-tvm/zephyr", None, ["0.12.0", "0.18.0"], ["0.11.0", "0.19.0"]),
        ("crt@~=0.9.0", "crt", None, ["0.9.0", "0.9.5"], ["0.10.0"]),
        ("acme/x_y-z.1@!=1.0", "acme/x_y-z.1", None, ["2.0"], ["1.0"]),
    ],
)
def test_parse_spec(text, name, version, ok, not_ok):
    spec = parse_spec(text)
    assert spec.name == name
    if version:
        assert str(spec.specifier) == version
    for v in ok:
        assert spec.matches(v), v
    for v in not_ok:
        assert not spec.matches(v), v


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "malformed"),
        ("two words", "malformed"),
        ("a/b/c", "malformed"),
        ("/zephyr", "malformed"),
        ("zephyr@", "nothing after '@'"),
        ("zephyr@@1", "not a version"),
        ("zephyr@>>1", "not a version"),
        ("zephyr@latest", "not a version"),
        ("zephyr@1.0,", "not a version"),
        ("zeph!yr", "malformed"),
    ],
)
def test_malformed_specs_name_the_spec(text, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    assert repr(text) in message and fragment in message and "\n" not in message


def test_vendor_is_optional_when_unambiguous():
    catalog = _catalog(ACME)
    assert resolve("blinky", catalog=catalog, lock=None).version.name == "acme/blinky"
    assert resolve("host", catalog=catalog, lock=None).version.name == "host"
    assert resolve("crt", catalog=catalog, lock=None).version.name == "apache-tvm/crt"


def test_ambiguous_name_lists_candidates():
    catalog = _catalog(ACME)
    with pytest.raises(TemplateNotFoundError) as info:
        resolve("zephyr", catalog=catalog, lock=None)
    assert "ambiguous" in str(info.value)
    assert "acme/zephyr" in str(info.value) and "apache-tvm/zephyr" in str(info.value)
    assert resolve("acme/zephyr", catalog=catalog, lock=None).version.version == "2.0"
    assert resolve("apache-tvm/zephyr", catalog=catalog, lock=None).version.version == "0.18.0"


@pytest.mark.parametrize(
    "typo, suggestion",
    [("zephir", "zephyr"), ("hots", "host"), ("apache-tvm/ardiuno", "apache-tvm/arduino"), ("blinkey", "blinky"), ("acme/blnky", "acme/blinky")],
)
def test_unknown_names_suggest_the_closest(typo, suggestion):
    with pytest.raises(TemplateNotFoundError) as info:
        resolve(typo, catalog=_catalog(ACME), lock=None)
    assert f"no template named {typo!r}" in str(info.value)
    assert suggestion in str(info.value).split("did you mean", 1)[1]


def test_unknown_name_without_close_match_points_to_list():
    with pytest.raises(TemplateNotFoundError, match="microtvm list"):
        resolve("qqqqqqqq", catalog=_catalog(ACME), lock=None)


def test_newest_matching_version_wins():
    catalog = _catalog(ACME)
    assert resolve("blinky", catalog=catalog, lock=None).version.version == "1.10.0"  # not string order
    assert resolve("blinky@<1.10", catalog=catalog, lock=None).version.version == "1.2.0"
    assert resolve("acme/zephyr", catalog=catalog, lock=None).version.version == "2.0"  # no pre-release
    assert resolve("acme/zephyr@>2.0", catalog=catalog, lock=None).version.version == "2.1rc1"
    assert resolve("acme/beta", catalog=catalog, lock=None).version.version == "1.0b2"  # only pre-releases
    assert resolve("apache-tvm/zephyr@>=0.12,<0.15", catalog=catalog, lock=None).version.version == "0.14.0"
    assert resolve("zephyr@0.9", catalog=_catalog(), lock=None).version.version == "0.9.0"


def test_no_matching_version_lists_available():
    with pytest.raises(TemplateNotFoundError) as info:
        resolve("blinky@>5", catalog=_catalog(ACME), lock=None)
    assert "acme/blinky has no version matching >5; available: 0.9, 1.2.0, 1.10.0" == str(info.value)


def test_lockfile_pin_wins_and_conflicts_are_errors(tmp_path):
    catalog = _catalog(ACME)
    lock = Lockfile(tmp_path / "microtvm.lock")
    newest = resolve("acme/blinky@1.2.0", catalog=catalog, lock=None).version
    lock.entries["acme/blinky"] = LockEntry("acme/blinky", "1.2.0", newest.source, "c" * 40, "acme")
    r = resolve("blinky", catalog=catalog, lock=lock)
    assert r.version.version == "1.2.0" and r.pin is not None and r.content_id == "c" * 40
    assert r.version.origin.kind == "lockfile" and not r.version.origin.trusted
    assert resolve("blinky@>=1,<2", catalog=catalog, lock=lock).version.version == "1.2.0"
    with pytest.raises(LockfileError) as info:
        resolve("blinky@1.10.0", catalog=catalog, lock=lock)
    assert "pins acme/blinky 1.2.0" in str(info.value) and "microtvm lock acme/blinky@==1.10.0" in str(info.value)
    # use_lock=False ignores the pin (what `microtvm lock` does when re-pinning).
    assert resolve("blinky", catalog=catalog, lock=lock, use_lock=False).version.version == "1.10.0"


def test_lockfile_found_by_walking_up(tmp_path, monkeypatch):
    catalog = _catalog(ACME)
    lock = Lockfile(tmp_path / "microtvm.lock")
    v = resolve("acme/blinky@0.9", catalog=catalog, lock=None).version
    lock.entries["acme/blinky"] = LockEntry("acme/blinky", "0.9", v.source, "c" * 40, "acme")
    lock.save()
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert resolve("blinky", catalog=catalog).version.version == "0.9"
    monkeypatch.chdir(tmp_path.parent)
    assert resolve("blinky", catalog=catalog).version.version == "1.10.0"


def test_pin_of_a_packaged_index_source_is_trusted(tmp_path):
    curated = _catalog().get("apache-tvm/zephyr").versions[0]
    lock = Lockfile(tmp_path / "microtvm.lock")
    lock.entries[curated.name] = LockEntry(curated.name, curated.version, curated.source, "d" * 40, "apache-tvm")
    r = resolve("zephyr", lock=lock)
    assert r.version.origin.trusted and r.version.requires == curated.requires
    # The same name and version from a different repository is not.
    import dataclasses

    other = dataclasses.replace(curated.source, url="https://evil.invalid/tvm.git", extra_files=())
    lock.entries[curated.name] = LockEntry(curated.name, curated.version, other, "d" * 40, "x")
    assert not resolve("zephyr", lock=lock).version.origin.trusted


def test_bare_pin_resolves_through_the_catalog(tmp_path):
    lock = Lockfile(tmp_path / "microtvm.lock")
    lock.entries["apache-tvm/crt"] = LockEntry("apache-tvm/crt", "0.10.0")
    r = resolve("crt", lock=lock, catalog=_catalog())
    assert r.version.version == "0.10.0" and r.version.origin.trusted and r.content_id is None
