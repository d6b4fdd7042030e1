"""microtvm.lock: lock pins by content id, sync verifies, --frozen refuses changes, bad files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from microtvm_registry.registry import extra_indexes
from microtvm_registry.cache.store import Cache
from microtvm_registry.contentid import tree_id
from microtvm_registry.errors import LockfileError, VerificationError
from microtvm_registry.registry.lockfile import Lockfile, find_lockfile
from microtvm_registry.pins import lock_specs, sync
from registry_support import (
    add_insteadof,
    cli_command,
    git_version_table,
    make_template_repo,
    run_cli,
    template_table,
    write_index,
)
from support.servers import GitDaemon

MIRRORED = "https://github.com/acme-test/templates.git"


@pytest.fixture
def acme(tmp_path, monkeypatch):
    """A local index 'acme' whose templates come from a real repository via insteadOf."""
    repo = tmp_path / "repos" / "templates"
    versions = make_template_repo(repo, ["1.0.0", "1.1.0"])
    add_insteadof(MIRRORED, repo)
    index_file = write_index(tmp_path / "acme.toml", [
        template_table("acme/blinky", [git_version_table(MIRRORED, v) for v in versions.values()]),
        template_table("acme/extra", [git_version_table(MIRRORED, versions["1.1.0"], extra=True)]),
    ])
    extra_indexes.add_extra_index("acme", str(index_file))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    return {"repo": repo, "versions": versions, "project": project, "index": index_file}


def test_lock_pins_exact_source_and_content_id(acme):
    lock = lock_specs(["blinky@1.0.0", "acme/extra", "host"]).lock
    path = acme["project"] / "microtvm.lock"
    assert lock.path == path and path.is_file()
    text = path.read_text()
    assert "schema = 1" in text and text.startswith("# microtvm.lock")
    loaded = Lockfile.load(path)
    blinky = loaded.entries["acme/blinky"]
    v = acme["versions"]["1.0.0"]
    assert blinky.version == "1.0.0" and blinky.source.commit == v.commit and blinky.source.url == MIRRORED
    assert blinky.content_id == v.tree  # no extra files: the content id is the folder's tree id
    extra = loaded.entries["acme/extra"]
    assert extra.source.extra_files[0].dest == "server.py"
    folder = Cache().entry_path(extra.content_id)
    assert (folder / "server.py").read_text() == "# server library 1.1.0\n"
    assert tree_id(folder) == extra.content_id != acme["versions"]["1.1.0"].tree
    host = loaded.entries["host"]
    assert host.source.relpath == "templates/host"
    from microtvm_registry import get_packaged_resource

    # the id covers the shared device runtime the template builds from, hashed in as common/
    assert host.source.include == ("templates/common",)
    mounted = tree_id(get_packaged_resource("templates/host"), {"common": get_packaged_resource("templates/common")})
    assert host.content_id == mounted != tree_id(get_packaged_resource("templates/host"))
    # No temporary files left beside the lockfile.
    assert sorted(p.name for p in acme["project"].iterdir()) == ["microtvm.lock"]


def test_pinned_version_is_what_resolution_and_paths_use(acme):
    from microtvm_registry.template_paths import get_template

    lock_specs(["blinky@1.0.0"])
    path = get_template("blinky")
    assert "1.0.0" in (path / "microtvm_api_server.py").read_text()
    sub = acme["project"] / "sub"
    sub.mkdir()
    proc = run_cli("path", "acme/blinky", cwd=sub)
    assert proc.returncode == 0 and Path(proc.stdout.strip()) == path
    # Re-locking a name keeps a pin that satisfies it (as uv does); --upgrade moves it.
    result = lock_specs(["blinky"])
    assert [c.action for c in result.changes] == ["kept"]
    assert "1.0.0" in (get_template("blinky") / "microtvm_api_server.py").read_text()
    result = lock_specs([], upgrade=["blinky"])
    assert [(c.action, c.old, c.new) for c in result.changes] == [("upgraded", "1.0.0", "1.1.0")]
    assert "1.1.0" in (get_template("blinky") / "microtvm_api_server.py").read_text()


def test_sync_fetches_and_verifies_everything_pinned(acme):
    lock_specs(["blinky@1.0.0", "acme/extra"])
    Cache().clean()
    result = sync()
    assert sorted(result.verified) == ["acme/blinky", "acme/extra"] and result.changed == []
    assert len(Cache().list_entries()) == 2
    proc = run_cli("sync", "--frozen")
    assert proc.returncode == 0, proc.stderr
    assert "ok acme/blinky 1.0.0" in proc.stdout


def test_sync_over_git_daemon(tmp_path, acme):
    """The same pins, served by a real git daemon instead of a folder."""
    with GitDaemon(acme["repo"].parent) as daemon:
        url = daemon.url("templates")
        index_file = write_index(tmp_path / "d.toml", [template_table("daemon/blinky", [git_version_table(url, acme["versions"]["1.1.0"], extra=True)])])
        extra_indexes.add_extra_index("d", str(index_file))
        lock = lock_specs(["daemon/blinky"]).lock
        entry = lock.entries["daemon/blinky"]
        Cache().clean()
        sync()
        assert Cache().has(entry.content_id)
        assert daemon.upload_pack_count("templates") >= 2


def test_content_id_mismatch_is_refused_and_nothing_cached(acme):
    lock = lock_specs(["acme/extra"]).lock
    path = lock.path
    good = lock.entries["acme/extra"].content_id
    path.write_text(path.read_text().replace(good, "0" * 40))
    Cache().clean()
    with pytest.raises(VerificationError, match="not 0{40} as pinned"):
        sync()
    assert Cache().list_entries() == []
    proc = run_cli("sync")
    assert proc.returncode == 1
    errors = [l for l in proc.stderr.splitlines() if l.startswith("microtvm: error: ")]
    assert len(errors) == 1 and "as pinned" in errors[0] and "Traceback" not in proc.stderr
    assert Cache().list_entries() == []


def test_pinned_packaged_template_that_changed_is_refused(acme):
    lock = lock_specs(["host"]).lock
    lock.path.write_text(lock.path.read_text().replace(lock.entries["host"].content_id, "1" * 40))
    with pytest.raises(VerificationError, match="host"):
        sync()
    from microtvm_registry.template_paths import get_template_for_run

    with pytest.raises(VerificationError):
        get_template_for_run("host")


def test_frozen_refuses_changes_and_plain_sync_completes(acme):
    path = acme["project"] / "microtvm.lock"
    path.write_text('schema = 1\n\n[[template]]\nname = "acme/blinky"\nversion = "1.0.0"\n')
    before = path.read_bytes()
    proc = run_cli("sync", "--frozen")
    assert proc.returncode == 1
    assert "acme/blinky would be resolved and pinned" in proc.stderr and "--frozen" in proc.stderr
    assert path.read_bytes() == before
    proc = run_cli("sync")
    assert proc.returncode == 0, proc.stderr
    entry = Lockfile.load(path).entries["acme/blinky"]
    assert entry.complete and entry.content_id == acme["versions"]["1.0.0"].tree
    assert run_cli("sync", "--frozen").returncode == 0


def test_sync_without_lockfile_says_what_to_do(acme):
    with pytest.raises(LockfileError, match="microtvm lock SPEC"):
        sync()


def test_lock_failure_leaves_the_lockfile_unchanged(acme):
    lock_specs(["blinky@1.0.0"])
    path = acme["project"] / "microtvm.lock"
    before = path.read_bytes()
    proc = run_cli("lock", "blinky@1.1.0", "no-such-template")
    assert proc.returncode == 1 and "no template named 'no-such-template'" in proc.stderr
    assert path.read_bytes() == before


def test_find_lockfile_walks_up(tmp_path):
    (tmp_path / "microtvm.lock").write_text("schema = 1\n")
    deep = tmp_path / "x" / "y"
    deep.mkdir(parents=True)
    assert find_lockfile(deep) == tmp_path / "microtvm.lock"
    assert find_lockfile(tmp_path.parent) != tmp_path / "microtvm.lock"


GOOD = (
    'schema = 1\n[[template]]\nname = "acme/a"\nversion = "1.0"\ncontent_id = "' + "c" * 40 + '"\n'
    'git = "https://example.invalid/a.git"\ncommit = "' + "a" * 40 + '"\nsubdir = "t"\ntree = "' + "b" * 40 + '"\n'
)


@pytest.mark.parametrize(
    "text, key, problem",
    [
        (GOOD.replace('"' + "a" * 40, '"xyz'), "template[0].commit", "expected 40 hex digits"),
        (GOOD.replace('content_id = "' + "c" * 40 + '"\n', ""), "template[0].content_id", "must pin its content id"),
        (GOOD.replace("c" * 40, "C" * 3), "template[0].content_id", "expected 40 hex digits"),
        (GOOD.replace('version = "1.0"', 'version = "one"'), "template[0].version", "PEP 440"),
        (GOOD.replace('version = "1.0"\n', ""), "template[0].version", "missing"),
        (GOOD.replace('name = "acme/a"', "name = 5"), "template[0].name", "expected a string"),
        (GOOD.replace("schema = 1", "schema = 7"), "schema", "expected 1"),
        (GOOD.replace("schema = 1\n", ""), "schema", "missing"),
        (GOOD + GOOD.split("\n", 1)[1], "template[1].name", "pinned twice"),
        (GOOD.replace('subdir = "t"', 'subdir = "../t"'), "template[0].subdir", "'..'"),
        (GOOD + 'url = "https://x.invalid/a.tgz"\n', "template[0]", "give one source"),
        (GOOD + 'plugin = "acme-dist"\n', "template[0]", "give one source"),
        (GOOD.replace("[[template]]", "[template]"), "template", "array of tables"),
    ],
)
def test_malformed_lockfile_names_file_and_key(tmp_path, text, key, problem):
    path = tmp_path / "microtvm.lock"
    path.write_text(text)
    with pytest.raises(LockfileError) as info:
        Lockfile.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message


def test_lockfile_with_invalid_toml(tmp_path, monkeypatch):
    (tmp_path / "microtvm.lock").write_text("schema = \n")
    monkeypatch.chdir(tmp_path)
    proc = run_cli("path", "host")
    assert proc.returncode == 1
    assert "microtvm.lock: not valid TOML" in proc.stderr


def test_round_trip_is_stable(tmp_path):
    path = tmp_path / "microtvm.lock"
    path.write_text(GOOD)
    lock = Lockfile.load(path)
    lock.save()
    again = Lockfile.load(path)
    assert again.entries == lock.entries
    data = path.read_bytes()
    again.save()
    assert path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["microtvm.lock"]
    assert os.access(path, os.R_OK)


# ---- uv's lock semantics -------------------------------------------------------------------


def test_lock_records_the_specifier_and_keeps_pins_that_satisfy_it(acme):
    path = acme["project"] / "microtvm.lock"
    lock_specs(["blinky@<1.1"])
    entry = Lockfile.load(path).entries["acme/blinky"]
    assert (entry.version, entry.specifier) == ("1.0.0", "<1.1")
    # A wider spec keeps the pin (nothing re-resolved) and records the new specifier.
    result = lock_specs(["blinky@>=1.0"])
    assert [(c.action, c.new) for c in result.changes] == [("kept", "1.0.0")]
    entry = Lockfile.load(path).entries["acme/blinky"]
    assert (entry.version, entry.specifier) == ("1.0.0", ">=1.0")
    # --upgrade re-resolves within the recorded specifier.
    proc = run_cli("lock", "--upgrade")
    assert proc.returncode == 0, proc.stderr
    assert "upgraded acme/blinky 1.0.0 -> 1.1.0" in proc.stdout
    assert Lockfile.load(path).entries["acme/blinky"].version == "1.1.0"


def test_lock_says_when_it_replaces_a_pin(acme):
    lock_specs(["blinky@1.1.0"])
    proc = run_cli("lock", "blinky@1.0.0")
    assert proc.returncode == 0, proc.stderr
    assert "replaced acme/blinky 1.1.0 with 1.0.0" in proc.stdout
    entry = Lockfile.load(acme["project"] / "microtvm.lock").entries["acme/blinky"]
    assert (entry.version, entry.specifier) == ("1.0.0", "==1.0.0")


def test_upgrade_of_a_name_that_is_not_pinned_is_an_error(acme):
    lock_specs(["blinky@1.0.0"])
    before = (acme["project"] / "microtvm.lock").read_bytes()
    proc = run_cli("lock", "--upgrade", "acme/extra")
    assert proc.returncode == 1 and "acme/extra is not pinned" in proc.stderr
    assert (acme["project"] / "microtvm.lock").read_bytes() == before
    proc = run_cli("lock")  # nothing asked for
    assert proc.returncode == 1 and "give templates to pin" in proc.stderr


def test_unlock_removes_a_pin(acme):
    lock_specs(["blinky@1.0.0", "acme/extra"])
    proc = run_cli("unlock", "blinky")
    assert proc.returncode == 0, proc.stderr
    assert "removed acme/blinky 1.0.0" in proc.stdout
    assert sorted(Lockfile.load(acme["project"] / "microtvm.lock").entries) == ["acme/extra"]
    proc = run_cli("unlock", "blinky")
    assert proc.returncode == 1 and "does not pin 'blinky'" in proc.stderr


def test_sync_locked_and_frozen_differ_as_in_uv(acme):
    """A pin moved outside its specifier by a hand edit: sync re-resolves and rewrites, --locked
    fails and changes nothing, --frozen uses the pin as written and changes nothing."""
    path = acme["project"] / "microtvm.lock"
    lock_specs(["blinky@1.0.0"])
    path.write_text(path.read_text().replace('specifier = "==1.0.0"', 'specifier = ">=1.1"'))
    edited = path.read_bytes()
    proc = run_cli("sync", "--locked")
    assert proc.returncode == 1 and "would change" in proc.stderr and "outside its specifier '>=1.1'" in proc.stderr
    assert path.read_bytes() == edited
    proc = run_cli("sync", "--frozen")
    assert proc.returncode == 0, proc.stderr
    assert "ok acme/blinky 1.0.0" in proc.stdout and path.read_bytes() == edited
    proc = run_cli("sync")
    assert proc.returncode == 0, proc.stderr
    assert "replaced acme/blinky 1.1.0" in proc.stdout and "updated" in proc.stderr
    entry = Lockfile.load(path).entries["acme/blinky"]
    assert (entry.version, entry.specifier) == ("1.1.0", ">=1.1")
    assert run_cli("sync", "--locked").returncode == 0
    assert run_cli("sync", "--frozen", "--locked").returncode == 2


def test_lock_refuses_to_write_into_a_packaged_template_or_the_cache(acme):
    from microtvm_registry import get_packaged_resource
    from microtvm_registry.template_paths import get_template

    host = get_packaged_resource("templates/host")
    before = sorted(p.name for p in host.iterdir())
    proc = run_cli("lock", "blinky@1.0.0", cwd=host)
    assert proc.returncode == 1 and "a lockfile belongs to your project" in proc.stderr
    assert sorted(p.name for p in host.iterdir()) == before
    entry = get_template("blinky@1.0.0")
    proc = run_cli("lock", "blinky@1.0.0", cwd=entry)
    assert proc.returncode == 1 and "inside the template cache" in proc.stderr
    assert not (entry / "microtvm.lock").exists()


def test_lock_writes_through_a_symlinked_lockfile(acme, tmp_path):
    real = tmp_path / "shared" / "microtvm.lock"
    real.parent.mkdir()
    real.write_text("schema = 1\n")
    link = acme["project"] / "microtvm.lock"
    link.symlink_to(real)
    lock_specs(["blinky@1.0.0"])
    assert link.is_symlink() and "acme/blinky" in real.read_text()
    run_cli("unlock", "blinky")
    assert link.is_symlink() and "acme/blinky" not in real.read_text()


def test_concurrent_locks_lose_no_pin(acme, tmp_path):
    """Four processes pinning different names into one lockfile at once: every pin survives."""
    import subprocess

    names = [f"acme/t{n}" for n in range(4)]
    v = acme["versions"]["1.0.0"]
    index_file = write_index(tmp_path / "many.toml", [template_table(n, [git_version_table(MIRRORED, v)]) for n in names])
    extra_indexes.add_extra_index("many", str(index_file))
    lock_specs(["blinky@1.0.0"])  # warm the cache: the race is on the lockfile, not the fetch
    path = acme["project"] / "microtvm.lock"
    start = path.read_bytes()
    for _round in range(3):
        path.write_bytes(start)
        procs = [subprocess.Popen(cli_command("lock", n), cwd=acme["project"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in names]
        for p in procs:
            _out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        assert sorted(Lockfile.load(path).entries) == sorted(names + ["acme/blinky"])


def test_path_honours_a_pin_of_a_packaged_template(acme):
    lock = lock_specs(["host"]).lock
    assert run_cli("path", "host").returncode == 0
    lock.path.write_text(lock.path.read_text().replace(lock.entries["host"].content_id, "1" * 40))
    proc = run_cli("path", "host")
    assert proc.returncode == 1 and "does not match the pinned 1111111111" in proc.stderr
