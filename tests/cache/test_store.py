"""Cache: real git daemon / HTTP server, real concurrent processes, real SIGKILLs."""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from microtvm_registry import contentid
from microtvm_registry.cache.store import Cache
from microtvm_registry.errors import OfflineError, UnsafeSourceError, VerificationError
from microtvm_registry.registry.sources import ArchiveSource, ExtraFile, GitSource, source_to_dict
from support.servers import Executable, GitDaemon, HttpServer, TcpProxy, make_repo, rev_parse


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("cachebase")
    files = {
        "apps/tpl/microtvm_api_server.py": "print('hi')\n",
        "apps/tpl/run.sh": Executable("#!/bin/sh\n"),
        "python/server.py": "SERVER = 1\n",
    }
    # a 'slow' template: ~1 MB of incompressible files, for killing fetches mid-way
    for i in range(8):
        files[f"apps/slow/blob{i}.bin"] = os.urandom(128 * 1024)
    commit = make_repo(base / "r", files, "c1")
    return {
        "base": base,
        "commit": commit,
        "tree": rev_parse(base / "r", f"{commit}:apps/tpl"),
        "slow_tree": rev_parse(base / "r", f"{commit}:apps/slow"),
        "blob": rev_parse(base / "r", f"{commit}:python/server.py"),
    }


@pytest.fixture(scope="module")
def daemon(repo):
    with GitDaemon(repo["base"]) as d:
        yield d


def tpl(repo, url, **kw):
    args = dict(commit=repo["commit"], subdir="apps/tpl", tree=repo["tree"])
    args.update(kw)
    return GitSource(url, **args)


def with_extra(repo, url):
    return tpl(repo, url, extra_files=(ExtraFile("python/server.py", "server.py", repo["blob"]),))


def assert_clean(cache: Cache) -> None:
    """No entry and no staging left behind."""
    assert not cache.templates_dir.exists() or os.listdir(cache.templates_dir) == []
    assert not cache.tmp_dir.exists() or os.listdir(cache.tmp_dir) == []


def test_fetch_then_warm_hit_without_network(repo, daemon):
    cache = Cache()
    assert cache.root == Path(os.environ["MICROTVM_REGISTRY_CACHE"])
    before = daemon.upload_pack_count("r")
    first = cache.materialize(tpl(repo, daemon.url("r")))
    assert first.fetched and first.content_id == repo["tree"]
    assert first.path == cache.templates_dir / repo["tree"]
    assert (first.path / "microtvm_api_server.py").read_text() == "print('hi')\n"
    assert os.access(first.path / "run.sh", os.X_OK)
    assert not os.access(first.path / "microtvm_api_server.py", os.W_OK) or os.getuid() == 0
    assert os.stat(first.path).st_mode & 0o222 == 0  # read-only entry
    fetches = daemon.upload_pack_count("r") - before
    assert fetches >= 1
    again = cache.materialize(tpl(repo, daemon.url("r")))
    assert (again.path, again.content_id, again.fetched) == (first.path, first.content_id, False)
    assert daemon.upload_pack_count("r") - before == fetches
    assert os.listdir(cache.tmp_dir) == []
    offline = cache.materialize(tpl(repo, "https://unreachable.invalid/r.git"), offline=True)
    assert offline.path == first.path  # URL-independent: a mirror hits the same entry


def test_offline_miss_says_what_to_do(repo):
    with pytest.raises(OfflineError) as err:
        Cache().materialize(tpl(repo, "https://github.com/x/y.git"), offline=True,
                            label="apache-tvm/zephyr@0.18.0")
    message = str(err.value)
    assert "apache-tvm/zephyr@0.18.0" in message and "microtvm fetch apache-tvm/zephyr@0.18.0" in message
    assert "\n" not in message


def test_extra_files_entry_is_found_offline_through_the_mapping(repo, daemon):
    cache = Cache()
    got = cache.materialize(with_extra(repo, daemon.url("r")))
    assert got.content_id != repo["tree"] and got.content_id == contentid.tree_id(got.path)
    assert (got.path / "server.py").read_text() == "SERVER = 1\n"
    mirror = with_extra(repo, "https://mirror.invalid/r.git")
    hit = cache.materialize(mirror, offline=True)
    assert hit.path == got.path and not hit.fetched
    # an expected content id pins it too
    assert cache.materialize(mirror, offline=True, expected_content_id=got.content_id).path == got.path
    with pytest.raises(OfflineError):
        cache.materialize(mirror, offline=True, expected_content_id="f" * 40)
    [entry] = cache.list_entries()
    assert entry.content_id == got.content_id and entry.size > 0
    assert entry.sources[0]["extra"][0]["dest"] == "server.py"


def test_entry_without_its_mapping_is_refetched_and_remapped(repo, daemon):
    """A crash between renaming the entry in and writing sources/<key>: the next use recovers."""
    cache = Cache()
    got = cache.materialize(with_extra(repo, daemon.url("r")))
    for item in cache.sources_dir.iterdir():
        item.unlink()
    with pytest.raises(OfflineError):
        cache.materialize(with_extra(repo, daemon.url("r")), offline=True)
    again = cache.materialize(with_extra(repo, daemon.url("r")))
    assert again.fetched and again.path == got.path
    assert cache.materialize(with_extra(repo, daemon.url("r")), offline=True).path == got.path


def test_an_entry_is_handed_out_only_for_a_source_that_yields_it(repo, daemon):
    """A lockfile pairing one source with the content id of another cached template: the cache
    does not hand out the other template's folder, it fetches this source and refuses the pin."""
    cache = Cache()
    slow = cache.materialize(tpl(repo, daemon.url("r"), subdir="apps/slow", tree=repo["slow_tree"]))
    assert cache.lookup(with_extra(repo, daemon.url("r")), expected_content_id=slow.content_id) is None
    with pytest.raises(VerificationError, match="as pinned"):
        cache.materialize(with_extra(repo, daemon.url("r")), expected_content_id=slow.content_id)
    assert [e.content_id for e in cache.list_entries()] == [slow.content_id]


def test_expected_content_id_mismatch_keeps_nothing(repo, daemon):
    cache = Cache()
    with pytest.raises(VerificationError) as err:
        cache.materialize(tpl(repo, daemon.url("r")), expected_content_id="0" * 40)
    assert repo["tree"] in str(err.value) and "0" * 40 in str(err.value)
    assert_clean(cache)
    assert cache.list_entries() == []


def test_wrong_tree_or_unsafe_source_keeps_nothing(repo, daemon):
    cache = Cache()
    with pytest.raises(VerificationError):
        cache.materialize(tpl(repo, daemon.url("r"), tree=repo["slow_tree"]))
    with pytest.raises(UnsafeSourceError):
        cache.materialize(tpl(repo, (repo["base"] / "r").as_uri()), allow_file_urls=False)
    assert_clean(cache)


def test_archive_source(repo, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data, mode in [("tpl/microtvm_api_server.py", b"print('hi')\n", 0o644),
                                 ("tpl/run.sh", b"#!/bin/sh\n", 0o755)]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tf.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    with HttpServer(tmp_path / "www") as http:
        http.put("t.tgz", data)
        source = ArchiveSource(http.url("t.tgz"), hashlib.sha256(data).hexdigest(), "tpl")
        got = Cache().materialize(source)
        assert got.content_id == repo["tree"]  # same content as the git folder: same id
        assert Cache().materialize(source).fetched is False
        assert http.request_count("t.tgz") == 1


def test_verify_and_repair_a_tampered_entry(repo, daemon):
    cache = Cache()
    got = cache.materialize(tpl(repo, daemon.url("r")))
    assert [r.ok for r in cache.verify()] == [True]
    target = got.path / "microtvm_api_server.py"
    os.chmod(got.path, 0o755)
    os.chmod(target, 0o644)
    target.write_text("print('tampered')\n")
    [bad] = cache.verify()
    assert not bad.ok and bad.actual != got.content_id and not bad.removed
    [bad] = cache.verify(repair=True)
    assert bad.removed and not got.path.exists()
    assert cache.verify() == []
    with pytest.raises(OfflineError):
        cache.materialize(tpl(repo, daemon.url("r")), offline=True)
    again = cache.materialize(tpl(repo, daemon.url("r")))
    assert again.fetched and (again.path / "microtvm_api_server.py").read_text() == "print('hi')\n"


def test_clean(repo, daemon, tmp_path):
    cache = Cache()
    a = cache.materialize(tpl(repo, daemon.url("r")))
    b = cache.materialize(with_extra(repo, daemon.url("r")))
    assert {e.content_id for e in cache.list_entries()} == {a.content_id, b.content_id}
    assert cache.clean(keep={a.content_id}) == [b.content_id]
    assert [e.content_id for e in cache.list_entries()] == [a.content_id]
    assert len(os.listdir(cache.sources_dir)) == 1  # b's mapping went with it
    assert cache.clean() == [a.content_id]
    assert cache.list_entries() == [] and os.listdir(cache.sources_dir) == []


def test_warm_path_imports_neither_git_nor_requests(repo, daemon):
    source = tpl(repo, daemon.url("r"))
    Cache().materialize(source)
    script = (
        "import json, sys\n"
        "from microtvm_registry.cache.store import Cache\n"
        "from microtvm_registry.registry.sources import source_from_dict\n"
        "m = Cache().materialize(source_from_dict(json.loads(sys.argv[1])), offline=True)\n"
        "print(m.content_id, sorted(k for k in ('git', 'requests', 'tqdm', 'urllib3') if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, json.dumps(source_to_dict(source))],
                         check=True, capture_output=True, text=True).stdout.split(None, 1)
    assert out == [repo["tree"], "[]\n"]


FETCH_SCRIPT = """
import json, sys
from microtvm_registry.cache.store import Cache
from microtvm_registry.registry.sources import source_from_dict
m = Cache().materialize(source_from_dict(json.loads(sys.argv[1])), progress=False)
print(json.dumps([str(m.path), m.content_id, m.fetched]))
"""


def _spawn(source):
    return subprocess.Popen(
        [sys.executable, "-c", FETCH_SCRIPT, json.dumps(source_to_dict(source))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def slow_source(repo, url):
    return tpl(repo, url, subdir="apps/slow", tree=repo["slow_tree"],
               extra_files=(ExtraFile("python/server.py", "server.py", repo["blob"]),))


def test_eight_processes_fetch_once(repo, daemon, tmp_path):
    # how many upload-pack requests one fetch of this source costs (in a throwaway cache)
    before = daemon.upload_pack_count("r")
    Cache(tmp_path / "probe").materialize(slow_source(repo, daemon.url("r")))
    per_fetch = daemon.upload_pack_count("r") - before
    with TcpProxy(daemon.port, rate=1_000_000) as slow:  # ~1 s per fetch: all 8 overlap
        before = daemon.upload_pack_count("r")
        procs = [_spawn(slow_source(repo, daemon.url("r", port=slow.port))) for _ in range(8)]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out))
    assert len({(path, cid) for path, cid, _ in results}) == 1
    assert sum(1 for _, _, fetched in results if fetched) == 1
    assert daemon.upload_pack_count("r") - before == per_fetch
    cache = Cache()
    assert [r.ok for r in cache.verify()] == [True]
    assert os.listdir(cache.tmp_dir) == []


def test_sigkill_at_random_moments_then_next_use_is_correct(repo, daemon):
    cache = Cache()
    rng = random.Random(1234)
    interrupted = 0
    with TcpProxy(daemon.port, rate=400_000) as slow:  # ~1 MB at 400 kB/s: kills land mid-fetch
        for _ in range(5):
            proc = _spawn(slow_source(repo, daemon.url("r", port=slow.port)))
            time.sleep(rng.uniform(0.05, 2.5))
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate(timeout=30)
            # whatever moment it died at, every entry that exists is complete and correct
            assert all(r.ok for r in cache.verify())
            if cache.list_entries():
                cache.clean()  # it finished first: start the next round from nothing
            else:
                interrupted += 1
    assert interrupted >= 2  # the kills really landed mid-fetch
    assert os.listdir(cache.tmp_dir) != []  # ... and left staging folders behind
    got = cache.materialize(slow_source(repo, daemon.url("r")))
    assert got.fetched and got.content_id == contentid.tree_id(got.path)
    assert "server.py" in os.listdir(got.path)
    assert os.listdir(cache.tmp_dir) == []  # swept by the next holder of the lock
    assert [r.ok for r in cache.verify()] == [True]


# ---- entries are re-checked before they are used -------------------------------------------


def _tamper(path: Path, name: str = "microtvm_api_server.py") -> None:
    os.chmod(path, 0o755)
    target = path / name
    os.chmod(target, 0o644)
    target.write_text("print('someone else')\n")
    os.chmod(target, 0o444)
    os.chmod(path, 0o555)


def test_a_tampered_entry_is_never_used(repo, daemon):
    """Changed after it was fetched (and made read-only again): the stat fingerprint differs, the
    re-hash differs, and the entry is removed and fetched again; offline it is an error."""
    cache = Cache()
    got = cache.materialize(tpl(repo, daemon.url("r")))
    _tamper(got.path)
    with pytest.raises(Exception, match="was changed after it was fetched"):
        cache.check_entry(got.content_id)
    again = cache.materialize(tpl(repo, daemon.url("r")))
    assert again.fetched and (again.path / "microtvm_api_server.py").read_text() == "print('hi')\n"
    _tamper(again.path)
    with pytest.raises(OfflineError):
        cache.materialize(tpl(repo, daemon.url("r")), offline=True)


def test_an_entry_replaced_by_a_symlink_or_made_writable_is_refused(repo, daemon, tmp_path):
    import shutil

    cache = Cache()
    got = cache.materialize(tpl(repo, daemon.url("r")))
    copy = tmp_path / "writable-copy"
    shutil.copytree(got.path, copy)
    for p in [copy, *copy.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    cache._remove_entry(got.content_id)
    os.symlink(copy, got.path)
    with pytest.raises(Exception, match="is a symlink"):
        cache.check_entry(got.content_id)
    again = cache.materialize(tpl(repo, daemon.url("r")))
    assert not again.path.is_symlink() and again.fetched
    assert copy.is_dir() and stat.S_IMODE(copy.stat().st_mode) == 0o755  # the link's target is left alone
    os.chmod(again.path / "microtvm_api_server.py", 0o644)
    with pytest.raises(Exception, match="is writable"):
        cache.check_entry(again.content_id)


def test_repair_never_follows_links_and_a_dangling_entry_never_blocks_a_fetch(repo, daemon, tmp_path):
    cache = Cache()
    got = cache.materialize(tpl(repo, daemon.url("r")))
    outside = tmp_path / "outside"
    outside.mkdir()
    os.chmod(outside, 0o700)
    cache._remove_entry(got.content_id)
    os.symlink(outside, got.path)
    results = cache.verify(repair=True)
    assert [(r.ok, r.removed) for r in results] == [(False, True)]
    assert not os.path.lexists(got.path) and stat.S_IMODE(outside.stat().st_mode) == 0o700
    os.symlink(tmp_path / "nothing-here", got.path)  # dangling
    assert cache.verify(repair=True)[0].removed and not os.path.lexists(got.path)
    os.symlink(tmp_path / "nothing-here", got.path)
    again = cache.materialize(tpl(repo, daemon.url("r")))  # not blocked by the dangling link
    assert again.fetched and again.path.is_dir() and not again.path.is_symlink()


def test_deleted_files_in_an_entry_are_noticed(repo, daemon):
    cache = Cache()
    got = cache.materialize(tpl(repo, daemon.url("r")))
    os.chmod(got.path, 0o755)
    os.unlink(got.path / "run.sh")
    os.chmod(got.path, 0o555)
    again = cache.materialize(tpl(repo, daemon.url("r")))
    assert again.fetched and (again.path / "run.sh").is_file()


def test_verify_covers_the_parse_memos():
    import zlib

    from microtvm_registry.files import PARSED_TOML_DIR, load_toml_bytes

    text = b'schema = 1\nname = "real"\n'
    load_toml_bytes(text, memo=True)
    memo = Cache().root / PARSED_TOML_DIR / f"{zlib.crc32(text):08x}-{len(text)}.json"
    assert Cache().verify_memos() == (1, [])
    memo.write_text(json.dumps({"toml": text.decode(), "doc": {"schema": 1, "name": "forged"}}))
    assert load_toml_bytes(text, memo=True)["name"] == "forged"  # what a forged memo would do...
    assert Cache().verify_memos(repair=True) == (1, [memo])  # ...until verify finds and removes it
    assert load_toml_bytes(text, memo=True)["name"] == "real"
