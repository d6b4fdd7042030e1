"""sources: real git (daemon on 127.0.0.1 and file://) and a real HTTP server, incl. hostile input."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
import hashlib
from pathlib import Path

import pytest

from microtvm_registry import contentid
from microtvm_registry.errors import FetchError, UnsafeSourceError, VerificationError
from microtvm_registry.registry.sources import ArchiveSource, ExtraFile, GitSource, source_from_dict, source_key, source_to_dict, url_transport
from microtvm_registry.fetch.archive import fetch_archive
from microtvm_registry.fetch.git import fetch_git
from support.servers import (
    Executable,
    GitDaemon,
    HttpServer,
    Symlink,
    TcpProxy,
    git,
    make_repo,
    rev_parse,
)

BIG = 300_000  # an unrelated incompressible file the partial fetch must not download


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A served base folder with repo 'r' (and a bare copy at apache/tvm.git), two commits."""
    base = tmp_path_factory.mktemp("gitbase")
    work = base / "r"
    first = make_repo(
        work,
        {
            "apps/tpl/microtvm_api_server.py": "print('server v1')\n",
            "apps/tpl/src/main.c": "int main(void) { return 0; }\n",
            "apps/tpl/qemu-hack/qemu-system-arm": Executable("#!/bin/sh\nexec true\n"),
            "apps/tpl/link-to-main": Symlink("src/main.c"),
            "python/project_api/server.py": "SERVER = 1\n",
            "big/unrelated.bin": os.urandom(BIG),
            "evil/ok.txt": "fine\n",
            "evil/escape": Symlink("../../../../etc/passwd"),
            "evil2/abs": Symlink("/etc/passwd"),
        },
        "first",
    )
    mid = make_repo(work, {"other.txt": "not a ref tip\n"}, "mid")
    second = make_repo(work, {"apps/tpl/microtvm_api_server.py": "print('server v2')\n"}, "second")
    git(["tag", "v1", first], cwd=work)
    (base / "apache").mkdir()
    git(["clone", "-q", "--bare", str(work), str(base / "apache" / "tvm.git")])
    info = {
        "base": base,
        "work": work,
        "first": first,
        "mid": mid,
        "second": second,
        "tree": rev_parse(work, f"{first}:apps/tpl"),
        "tree2": rev_parse(work, f"{second}:apps/tpl"),
        "server_blob": rev_parse(work, f"{first}:python/project_api/server.py"),
        "evil_tree": rev_parse(work, f"{first}:evil"),
        "evil2_tree": rev_parse(work, f"{first}:evil2"),
    }
    return info


@pytest.fixture(scope="module")
def daemon(repo):
    with GitDaemon(repo["base"]) as d:
        yield d


def tpl_source(repo, url, **kw):
    args = dict(commit=repo["first"], subdir="apps/tpl", tree=repo["tree"])
    args.update(kw)
    return GitSource(url, **args)


def check_template(folder: Path, version: int = 1) -> None:
    assert (folder / "microtvm_api_server.py").read_text() == f"print('server v{version}')\n"
    assert os.access(folder / "qemu-hack" / "qemu-system-arm", os.X_OK)
    assert not os.access(folder / "src" / "main.c", os.X_OK)
    assert os.readlink(folder / "link-to-main") == "src/main.c"


# ------------------------------------------------------------------------------------ git


def test_git_daemon_partial_fetch_gets_only_the_folder(repo, daemon, tmp_path):
    with TcpProxy(daemon.port) as proxy:
        source = tpl_source(
            repo,
            daemon.url("r", port=proxy.port),
            extra_files=(ExtraFile("python/project_api/server.py", "server.py", repo["server_blob"]),),
        )
        fetch_git(source, tmp_path / "out")
        received = proxy.bytes_down
    out = tmp_path / "out"
    check_template(out)
    assert (out / "server.py").read_text() == "SERVER = 1\n"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no work folders left behind
    assert received < BIG / 2, f"downloaded {received} bytes: the unrelated blob came too"
    # content with the extra file differs from the folder's tree; without it, equals the tree
    assert contentid.tree_id(out) != repo["tree"]
    (out / "server.py").unlink()
    assert contentid.tree_id(out) == repo["tree"]


@pytest.mark.parametrize("kind", ["file-url", "plain-path"])
def test_local_repositories(repo, tmp_path, kind):
    url = repo["work"].as_uri() if kind == "file-url" else str(repo["work"])
    fetch_git(tpl_source(repo, url), tmp_path / "out")
    check_template(tmp_path / "out")
    with pytest.raises(UnsafeSourceError, match="local file"):
        fetch_git(tpl_source(repo, url), tmp_path / "refused", allow_file_urls=False)
    assert not (tmp_path / "refused").exists()


def test_insteadof_mirror_redirect(repo, daemon, tmp_path):
    gitconfig = Path(os.environ["GIT_CONFIG_GLOBAL"])
    with gitconfig.open("a") as f:
        f.write(f'[url "{daemon.url("")}"]\n\tinsteadOf = https://github.com/\n')
    before = daemon.upload_pack_count("apache/tvm.git")
    source = tpl_source(repo, "https://github.com/apache/tvm.git", commit=repo["second"], tree=repo["tree2"])
    fetch_git(source, tmp_path / "out", allow_file_urls=False)
    check_template(tmp_path / "out", version=2)
    assert daemon.upload_pack_count("apache/tvm.git") > before


def test_insteadof_to_a_dangerous_transport_is_refused(repo, tmp_path):
    gitconfig = Path(os.environ["GIT_CONFIG_GLOBAL"])
    marker = tmp_path / "pwned"
    with gitconfig.open("a") as f:
        f.write(f'[url "ext::sh -c touch% {marker}% #"]\n\tinsteadOf = https://evil.example/\n')
    with pytest.raises(UnsafeSourceError):
        fetch_git(tpl_source(repo, "https://evil.example/x.git"), tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_server_without_filter_support_still_works(repo, tmp_path):
    with GitDaemon(repo["base"], allow_filter=False) as d:
        fetch_git(tpl_source(repo, d.url("r")), tmp_path / "out")
    check_template(tmp_path / "out")


def _use_protocol_v0():
    with Path(os.environ["GIT_CONFIG_GLOBAL"]).open("a") as f:
        f.write("[protocol]\n\tversion = 0\n")


def test_server_refusing_commit_ids_falls_back_to_ref(repo, tmp_path):
    _use_protocol_v0()
    with GitDaemon(repo["base"], allow_any_sha1=False) as d:
        # the pinned commit is the tip of tag v1: fetched by ref, then checked
        fetch_git(tpl_source(repo, d.url("r"), ref="v1"), tmp_path / "a")
        check_template(tmp_path / "a")
        # an older commit behind a ref: deepened until found
        fetch_git(tpl_source(repo, d.url("r"), commit=repo["mid"], ref="main"), tmp_path / "b")
        check_template(tmp_path / "b")
        with pytest.raises(VerificationError, match="not available"):  # no ref to fall back on
            fetch_git(tpl_source(repo, d.url("r"), commit=repo["mid"]), tmp_path / "c")
        with pytest.raises(VerificationError):
            fetch_git(tpl_source(repo, d.url("r"), commit="1" * 40, ref="main"), tmp_path / "d")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_wrong_commit_tree_blob_and_subdir_are_refused(repo, daemon, tmp_path):
    url = daemon.url("r")
    cases = {
        "commit": tpl_source(repo, url, commit="0123456789" * 4),
        "tree": tpl_source(repo, url, tree=repo["tree2"]),
        "subdir": tpl_source(repo, url, subdir="apps/missing"),
        "blob": tpl_source(
            repo, url, extra_files=(ExtraFile("python/project_api/server.py", "server.py", "ab" * 20),)
        ),
        "extra-missing": tpl_source(repo, url, extra_files=(ExtraFile("nope.py", "nope.py", "ab" * 20),)),
    }
    for name, source in cases.items():
        with pytest.raises(VerificationError):
            fetch_git(source, tmp_path / name)
        assert not (tmp_path / name).exists(), name
    assert os.listdir(tmp_path) == []


def test_unreachable_server(repo, tmp_path):
    from support.servers import free_port

    source = tpl_source(repo, f"git://127.0.0.1:{free_port()}/r")
    with pytest.raises(FetchError, match="127.0.0.1"):
        fetch_git(source, tmp_path / "out")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name,tree_key", [("evil", "evil_tree"), ("evil2", "evil2_tree")])
def test_symlink_escaping_the_template_is_refused(repo, daemon, tmp_path, name, tree_key):
    source = GitSource(daemon.url("r"), repo["first"], name, repo[tree_key])
    with pytest.raises(UnsafeSourceError, match="symlink"):
        fetch_git(source, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_progress_output_does_not_break_fetching(repo, daemon, tmp_path):
    fetch_git(tpl_source(repo, daemon.url("r")), tmp_path / "out", progress=True)
    check_template(tmp_path / "out")


C = "a" * 40


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ext::sh -c touch% /tmp/pwned"},
        {"url": "fd::3"},
        {"url": "-uhttps://example.com/x"},
        {"url": "--upload-pack=touch /tmp/x"},
        {"url": "ssh://-oProxyCommand=touch%20x/y"},
        {"url": "-oProxyCommand=x:y"},
        {"url": "gopher://example.com/x"},
        {"url": "https://example.com/x\nfoo"},
        {"url": ""},
        {"commit": "-" + "a" * 39},
        {"commit": "HEAD"},
        {"commit": "abc123"},
        {"commit": "g" * 40},
        {"ref": "-dangerous"},
        {"ref": "a..b"},
        {"ref": "x y"},
        {"subdir": "/etc"},
        {"subdir": "../x"},
        {"subdir": "a/../../b"},
        {"subdir": "-x"},
        {"tree": "nothex"},
        {"extra_files": ({"path": "a", "dest": "../../x", "blob": C},)},
        {"extra_files": ({"path": "a", "dest": "x", "blob": C}, {"path": "b", "dest": "x", "blob": C})},
    ],
)
def test_dangerous_git_input_is_refused(kwargs):
    args = dict(url="https://example.com/r.git", commit=C, subdir="t", tree=None)
    args.update(kwargs)
    with pytest.raises(UnsafeSourceError):
        GitSource(**args)


@pytest.mark.parametrize(
    "path,dest",
    [("/etc/passwd", "x"), ("../x", "x"), ("a", "/abs"), ("a", "../x"), ("a", ""), ("a", "x\\y")],
)
def test_dangerous_extra_files_are_refused(path, dest):
    with pytest.raises(UnsafeSourceError):
        ExtraFile(path, dest, C)


def test_url_transports():
    assert url_transport("https://github.com/apache/tvm.git") == "https"
    assert url_transport("git@github.com:apache/tvm.git") == "ssh"
    assert url_transport("ssh+git://host/x") == "ssh"
    assert url_transport("/srv/git/tvm") == "file"
    assert url_transport("file:///srv/git/tvm") == "file"
    assert url_transport("git://127.0.0.1:9/x") == "git"


def test_source_key_is_url_independent_and_dicts_round_trip():
    a = GitSource("https://github.com/apache/tvm.git", C, "apps/x/", C, ref="v0.18.0",
                  extra_files=(ExtraFile("p/server.py", "server.py", "b" * 40),))
    b = GitSource("https://mirror.example/tvm.git", C.upper(), "./apps/x", C)
    assert a.subdir == "apps/x" and b.commit == C
    assert source_key(a) != source_key(b)  # extras differ
    assert source_key(GitSource("https://m/x", C, "apps/x", C)) == source_key(b)
    assert source_from_dict(source_to_dict(a)) == a
    arch = ArchiveSource("https://example.com/t.tar.gz", "C" * 64, "t", None)
    assert source_from_dict(source_to_dict(arch)) == arch
    assert source_key(arch) == source_key(ArchiveSource("https://other/t.tgz", "c" * 64, "t/"))


# ------------------------------------------------------------------------------------ archives


def make_tar(members, compression="gz") -> bytes:
    """members: list of (TarInfo-kwargs dict, data-or-None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tf:
        for spec, data in members:
            info = tarfile.TarInfo(spec.pop("name"))
            for k, v in spec.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def good_tar() -> bytes:
    return make_tar(
        [
            ({"name": "proj-1.0/", "type": tarfile.DIRTYPE, "mode": 0o755}, None),
            ({"name": "proj-1.0/tpl/microtvm_api_server.py", "mode": 0o644}, b"print('server v1')\n"),
            ({"name": "proj-1.0/tpl/src/main.c", "mode": 0o644}, b"int main(void) { return 0; }\n"),
            ({"name": "proj-1.0/tpl/qemu-hack/qemu-system-arm", "mode": 0o755}, b"#!/bin/sh\nexec true\n"),
            ({"name": "proj-1.0/tpl/link-to-main", "type": tarfile.SYMTYPE, "linkname": "src/main.c"}, None),
            ({"name": "proj-1.0/README", "mode": 0o644}, b"readme\n"),
        ]
    )


def good_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        def add(name, data, mode):
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)

        add("tpl/microtvm_api_server.py", b"print('server v1')\n", 0o100644)
        add("tpl/src/main.c", b"int main(void) { return 0; }\n", 0o100644)
        add("tpl/qemu-hack/qemu-system-arm", b"#!/bin/sh\nexec true\n", 0o100755)
        add("tpl/link-to-main", b"src/main.c", 0o120777)
    return buf.getvalue()


@pytest.fixture
def http(tmp_path):
    with HttpServer(tmp_path / "www") as server:
        yield server


def archive_source(http, name, data, subdir="proj-1.0/tpl", tree=None, **kw):
    http.put(name, data)
    return ArchiveSource(http.url(name), hashlib.sha256(data).hexdigest(), subdir, tree, **kw)


FAST = dict(timeout=(2.0, 2.0), retries=3, backoff=0.01)


def test_tar_and_zip_archives(repo, http, tmp_path):
    src = archive_source(http, "t.tar.gz", good_tar(), tree=repo["tree"])
    fetch_archive(src, tmp_path / "tar", **FAST)
    check_template(tmp_path / "tar")
    assert contentid.tree_id(tmp_path / "tar") == repo["tree"]  # same id as from git
    src = archive_source(http, "t.zip", good_zip(), subdir="tpl", tree=repo["tree"])
    fetch_archive(src, tmp_path / "zip", progress=True, **FAST)
    check_template(tmp_path / "zip")
    assert sorted(os.listdir(tmp_path)) == ["tar", "www", "zip"]


def test_archive_wrong_sha256_and_wrong_tree(repo, http, tmp_path):
    data = good_tar()
    http.put("t.tar.gz", data)
    bad = ArchiveSource(http.url("t.tar.gz"), "0" * 64, "proj-1.0/tpl")
    with pytest.raises(VerificationError, match="sha256"):
        fetch_archive(bad, tmp_path / "a", **FAST)
    wrong_tree = archive_source(http, "t.tar.gz", data, tree=repo["tree2"])
    with pytest.raises(VerificationError, match="tree"):
        fetch_archive(wrong_tree, tmp_path / "b", **FAST)
    no_subdir = archive_source(http, "t.tar.gz", data, subdir="nope")
    with pytest.raises(VerificationError, match="no folder"):
        fetch_archive(no_subdir, tmp_path / "c", **FAST)
    assert os.listdir(tmp_path) == ["www"]


def test_http_404_is_not_retried(http, tmp_path):
    src = ArchiveSource(http.url("missing.tar.gz"), "0" * 64)
    with pytest.raises(FetchError, match="404"):
        fetch_archive(src, tmp_path / "out", **FAST)
    assert http.request_count("missing.tar.gz") == 1


@pytest.mark.parametrize(
    "fault",
    [dict(status=500, times=2), dict(status=503), dict(reset=True), dict(truncate=100), dict(truncate=0)],
)
def test_transient_http_failures_are_retried(http, tmp_path, fault):
    src = archive_source(http, "t.tar.gz", good_tar())
    http.add_fault("t.tar.gz", **fault)
    fetch_archive(src, tmp_path / "out", **FAST)
    check_template(tmp_path / "out")
    assert http.request_count("t.tar.gz") == fault.get("times", 1) + 1


def test_persistent_500_gives_up(http, tmp_path):
    src = archive_source(http, "t.tar.gz", good_tar())
    http.add_fault("t.tar.gz", status=500, times=100)
    with pytest.raises(FetchError, match="500"):
        fetch_archive(src, tmp_path / "out", timeout=(2.0, 2.0), retries=2, backoff=0.01)
    assert not (tmp_path / "out").exists()


def test_slow_server_times_out(http, tmp_path):
    src = archive_source(http, "t.tar.gz", good_tar())
    http.add_fault("t.tar.gz", delay=1.5, times=100)
    with pytest.raises(FetchError, match="timed out"):
        fetch_archive(src, tmp_path / "out", timeout=(1.0, 0.3), retries=1, backoff=0.01)
    assert not (tmp_path / "out").exists()


def test_file_url_archives(tmp_path):
    data = good_tar()
    (tmp_path / "t.tar.gz").write_bytes(data)
    src = ArchiveSource((tmp_path / "t.tar.gz").as_uri(), hashlib.sha256(data).hexdigest(), "proj-1.0/tpl")
    fetch_archive(src, tmp_path / "out")
    check_template(tmp_path / "out")
    with pytest.raises(UnsafeSourceError):
        fetch_archive(src, tmp_path / "refused", allow_file_urls=False)


EVIL_TARS = {
    "absolute": [({"name": "/tmp/evil-abs"}, b"x")],
    "dotdot": [({"name": "proj-1.0/../../evil"}, b"x")],
    "abs-symlink": [({"name": "proj-1.0/l", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None)],
    "escaping-symlink": [({"name": "proj-1.0/l", "type": tarfile.SYMTYPE, "linkname": "../../.."}, None)],
    "write-through-symlink": [
        ({"name": "proj-1.0/l", "type": tarfile.SYMTYPE, "linkname": "."}, None),
        ({"name": "proj-1.0/l/x"}, b"x"),
    ],
    "hardlink-outside": [({"name": "proj-1.0/h", "type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, None)],
    "char-device": [({"name": "proj-1.0/dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)],
    "fifo": [({"name": "proj-1.0/fifo", "type": tarfile.FIFOTYPE}, None)],
}


@pytest.mark.parametrize("stdlib_filter", [True, False], ids=["with-data-filter", "own-checks-only"])
@pytest.mark.parametrize("case", sorted(EVIL_TARS))
def test_tar_members_escaping_are_refused(http, tmp_path, monkeypatch, case, stdlib_filter):
    if not stdlib_filter:  # Python 3.9-3.11.3 have no tarfile.data_filter: our checks must suffice
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    src = archive_source(http, "evil.tar", make_tar([(dict(s), d) for s, d in EVIL_TARS[case]], ""), "proj-1.0")
    with pytest.raises(UnsafeSourceError):
        fetch_archive(src, tmp_path / "out", **FAST)
    assert sorted(os.listdir(tmp_path)) == ["www"]
    assert not Path("/tmp/evil-abs").exists()


@pytest.mark.parametrize(
    "name,data,mode",
    [("../evil", b"x", 0o100644), ("/abs/evil", b"x", 0o100644), ("t/l", b"../../x", 0o120777),
     ("t/l", b"/etc/passwd", 0o120777), ("t\\..\\..\\x", b"x", 0o100644)],
)
def test_zip_members_escaping_are_refused(http, tmp_path, name, data, mode):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("t/ok.txt")
        zf.writestr(info, b"ok")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, data)
    src = archive_source(http, "evil.zip", buf.getvalue(), "t")
    with pytest.raises(UnsafeSourceError):
        fetch_archive(src, tmp_path / "out", **FAST)
    assert sorted(os.listdir(tmp_path)) == ["www"]


def test_git_errors_show_the_reason_not_git_advice(tmp_path):
    from microtvm_registry.fetch.git import _git_reason

    stderr = (
        "fatal: Could not read from remote repository.\n\n"
        "Please make sure you have the correct access rights\nand the repository exists.\n"
    )
    assert _git_reason(stderr) == "fatal: Could not read from remote repository."
    assert _git_reason("warning: x\nsomething odd\n") == "something odd"
    assert _git_reason("") == "git failed without a message"


# ---- bounded downloads: deadlines, Retry-After, sizes, encodings, redirects ------------------

HANG_STOP = 120  # seconds; only stops a hang, never asserted on


def _bounded(fn, *args, **kw):
    """Run a download in a thread so a regression that hangs fails the test instead of the run."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kw).result(timeout=HANG_STOP)
    finally:
        pool.shutdown(wait=False)


def test_retry_after_is_capped_and_the_download_deadline_holds(http, tmp_path, monkeypatch):
    monkeypatch.setenv("MICROTVM_REGISTRY_DOWNLOAD_DEADLINE", "1.5")
    src = archive_source(http, "t.tar.gz", good_tar())
    http.add_fault("t.tar.gz", status=503, headers={"Retry-After": "100000"}, times=1000)
    with pytest.raises(FetchError) as err:
        _bounded(fetch_archive, src, tmp_path / "out", **FAST)
    assert "download deadline" in str(err.value) and "Retry-After" in str(err.value)
    assert "MICROTVM_REGISTRY_DOWNLOAD_DEADLINE" in str(err.value)
    assert os.listdir(tmp_path) == ["www"]


def test_a_stalled_server_ends_at_the_deadline(http, tmp_path, monkeypatch):
    monkeypatch.setenv("MICROTVM_REGISTRY_DOWNLOAD_DEADLINE", "1.5")
    src = archive_source(http, "t.tar.gz", good_tar() + b"\0" * 4096)
    http.add_fault("t.tar.gz", rate=200.0, times=1000)  # 200 B/s: 20 s for the whole file
    with pytest.raises(FetchError, match="download deadline"):
        _bounded(fetch_archive, src, tmp_path / "out", timeout=(2.0, 60.0), retries=16, backoff=0.01)
    assert os.listdir(tmp_path) == ["www"]


def test_endless_and_oversized_bodies_stop_at_the_limit(http, tmp_path, monkeypatch):
    monkeypatch.setenv("MICROTVM_REGISTRY_MAX_ARCHIVE_BYTES", str(1 << 20))
    src = archive_source(http, "t.tar.gz", good_tar())
    http.add_fault("t.tar.gz", endless=True)
    with pytest.raises(FetchError, match="more than the limit of 1,048,576 bytes.*MICROTVM_REGISTRY_MAX_ARCHIVE_BYTES"):
        _bounded(fetch_archive, src, tmp_path / "out", **FAST)
    big = archive_source(http, "big.tar", b"\0" * (2 << 20))
    with pytest.raises(FetchError, match="is 2,097,152 bytes, more than the limit"):
        _bounded(fetch_archive, big, tmp_path / "out", **FAST)
    assert http.request_count("big.tar") == 1  # refused from its Content-Length, not retried
    assert os.listdir(tmp_path) == ["www"]


def test_content_encoding_gzip_counts_the_bytes_on_the_wire(repo, http, tmp_path):
    """A server that labels a .tar.gz `Content-Encoding: gzip`: the file is kept as served (its
    sha256 is what is pinned), and its length matches Content-Length."""
    src = archive_source(http, "t.tar.gz", good_tar(), tree=repo["tree"])
    http.add_fault("t.tar.gz", headers={"Content-Encoding": "gzip"}, times=10)
    _bounded(fetch_archive, src, tmp_path / "out", **FAST)
    assert contentid.tree_id(tmp_path / "out") == repo["tree"]
    assert http.requests[-1].headers.get("Accept-Encoding") == "identity"


def test_redirects_to_file_and_redirect_loops_are_one_line(http, tmp_path):
    src = archive_source(http, "t.tar.gz", good_tar())
    http.add_fault("t.tar.gz", status=302, headers={"Location": "file:///etc/passwd"})
    with pytest.raises(FetchError, match="redirected to a URL that is not http"):
        _bounded(fetch_archive, src, tmp_path / "out", **FAST)
    http.add_fault("t.tar.gz", status=302, headers={"Location": src.url}, times=100)
    with pytest.raises(FetchError, match="redirect loop"):
        _bounded(fetch_archive, src, tmp_path / "out", **FAST)
    assert os.listdir(tmp_path) == ["www"]


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_archive_bombs_stop_at_the_extraction_limit(http, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("MICROTVM_REGISTRY_MAX_EXTRACTED_BYTES", str(1 << 20))
    zeros = b"\0" * (4 << 20)  # compresses to a few KB
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("tpl/big.bin", zeros)
        data, subdir = buf.getvalue(), "tpl"
    else:
        data, subdir = make_tar([({"name": "tpl/big.bin", "mode": 0o644}, zeros)]), "tpl"
    assert len(data) < 64 * 1024
    src = archive_source(http, f"bomb.{kind}", data, subdir=subdir)
    with pytest.raises(FetchError, match="expands to more than 1,048,576 bytes"):
        _bounded(fetch_archive, src, tmp_path / "out", **FAST)
    assert os.listdir(tmp_path) == ["www"]


def test_an_endless_index_body_costs_megabytes_not_gigabytes(http, monkeypatch):
    from microtvm_registry.registry import extra_indexes

    monkeypatch.setenv("MICROTVM_REGISTRY_MAX_INDEX_BYTES", str(1 << 20))
    http.add_fault("index.toml", endless=True)
    with pytest.raises(FetchError, match="more than the limit of 1,048,576 bytes.*MICROTVM_REGISTRY_MAX_INDEX_BYTES"):
        _bounded(extra_indexes.add_extra_index, "endless", http.url("index.toml"))
    assert extra_indexes.list_extra_indexes() == []
