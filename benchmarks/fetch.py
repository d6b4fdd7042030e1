"""Benchmark: fetching one template folder from a large repository.

Builds (once, cached under $MICROTVM_BENCH_DIR or /tmp/microtvm-bench-fetch) a repository with
>= 200 MB of incompressible history and >= 10,000 files, with a ~100 KB template folder, serves it
with ``git daemon`` on 127.0.0.1 behind a byte-counting TCP proxy, and measures in the same run
bytes received and wall time of:

  (a) a full ``git clone``                                     (baseline: what we avoid)
  (b) ``git clone --depth 1 --filter=blob:none --sparse`` + ``git sparse-checkout set FOLDER``
      (the best a user can do by hand)
  (c) ``Cache.materialize`` of that folder into a fresh cache  (ours)

Targets: (c) <= 1.5x (b) in bytes and time, and (a) >= 20x (c) in bytes and time.
Then the warm path: ``microtvm path NAME@VERSION`` with a warm cache against ``python -c pass``
(target <= 3x); if the CLI cannot resolve the benchmark template it times a warm
``Cache.materialize`` in a fresh interpreter instead, and says so.

Run: /tmp/tvmvenv/bin/python benchmarks/fetch.py
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.servers import GitDaemon, TcpProxy, git  # noqa: E402

N_SMALL = 10_000  # small files in the tip commit
SMALL_SIZE = 1024
N_HISTORY_COMMITS = 50
BIG_PER_COMMIT = 4 * 1024 * 1024  # incompressible bytes added per history commit (200 MB total)
TEMPLATE = "apps/microtvm/template_project"
TEMPLATE_FILES = 25
TEMPLATE_FILE_SIZE = 4 * 1024  # 25 x 4 KB = 100 KB
VERSION = 2  # bump when the generated repository changes


def build_repo(bench: Path) -> Path:
    """A bare repository built with git fast-import from random (incompressible) blobs."""
    repo = bench / f"big-v{VERSION}.git"
    if (repo / "microtvm-bench-complete").exists():
        git(["symbolic-ref", "HEAD", "refs/heads/main"], cwd=repo)
        return repo
    if repo.exists():
        shutil.rmtree(repo)
    print(f"building the benchmark repository in {repo} (once) ...", flush=True)
    start = time.perf_counter()
    git(["init", "-q", "--bare", "-b", "main", str(repo)])
    proc = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=repo, stdin=subprocess.PIPE)
    out = proc.stdin
    assert out is not None
    mark = 0
    stamp = 1_700_000_000

    def blob(data: bytes) -> int:
        nonlocal mark
        mark += 1
        out.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)))
        out.write(data)
        out.write(b"\n")
        return mark

    def commit(message: str, changes, parent) -> int:
        nonlocal mark, stamp
        mark += 1
        stamp += 60
        msg = message.encode()
        out.write(b"commit refs/heads/main\nmark :%d\n" % mark)
        out.write(b"committer bench <bench@localhost> %d +0000\n" % stamp)
        out.write(b"data %d\n%s\n" % (len(msg), msg))
        if parent:
            out.write(b"from :%d\n" % parent)
        for mode, m, path in changes:
            out.write(b"M %s :%d %s\n" % (mode, m, path.encode()))
        out.write(b"\n")
        return mark

    parent = 0
    # history: large incompressible data files, rewritten commit after commit
    for i in range(N_HISTORY_COMMITS):
        changes = [(b"100644", blob(os.urandom(BIG_PER_COMMIT)), f"data/blob{i % 5}.bin")]
        parent = commit(f"history {i}", changes, parent)
    # the tip: 10,000 small files and the template folder
    changes = []
    for i in range(N_SMALL):
        changes.append((b"100644", blob(os.urandom(SMALL_SIZE)), f"src/mod{i // 100:03d}/file{i:05d}.c"))
    for i in range(TEMPLATE_FILES):
        mode = b"100755" if i == 0 else b"100644"
        changes.append((mode, blob(os.urandom(TEMPLATE_FILE_SIZE)), f"{TEMPLATE}/f{i:02d}.c"))
    commit("tip", changes, parent)
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    (repo / "microtvm-bench-complete").write_text("ok\n")
    print(f"  built in {time.perf_counter() - start:.1f} s", flush=True)
    return repo


def du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def run_git(args, cwd=None):
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def measure(proxy: TcpProxy, fn, repeat: int):
    """(median seconds, median bytes received) over ``repeat`` runs."""
    times, sizes = [], []
    for _ in range(repeat):
        proxy.reset_counters()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        time.sleep(0.05)  # let the proxy threads count the last bytes
        sizes.append(proxy.bytes_down)
    return statistics.median(times), statistics.median(sizes)


def mib(n: float) -> str:
    return f"{n / 2**20:8.2f} MiB"


def line(name: str, value: str, baseline: str, ratio: float, target: str, ok: bool) -> None:
    print(f"  {name:<44} {value:>14}   baseline {baseline:>14}   ratio {ratio:7.2f}x   "
          f"target {target:<10} {'OK' if ok else 'MISSED'}")


def main() -> int:
    bench = Path(os.environ.get("MICROTVM_BENCH_DIR", "/tmp/microtvm-bench-fetch"))
    bench.mkdir(parents=True, exist_ok=True)
    repo = build_repo(bench)
    commit = git(["rev-parse", "main"], cwd=repo)
    tree = git(["rev-parse", f"main:{TEMPLATE}"], cwd=repo)
    history = du(repo / "objects")
    files = int(git(["ls-tree", "-r", "--name-only", "main"], cwd=repo).count("\n")) + 1
    print(f"repository: {mib(history).strip()} of packed objects, {files} files at the tip, "
          f"template {TEMPLATE} = {TEMPLATE_FILES} files, {TEMPLATE_FILES * TEMPLATE_FILE_SIZE // 1024} KB")

    work = Path(tempfile.mkdtemp(prefix="run-", dir=bench))
    env_keep = dict(os.environ)
    os.environ["GIT_CONFIG_GLOBAL"] = str(work / "gitconfig")
    (work / "gitconfig").write_text("[user]\n\tname = bench\n\temail = bench@localhost\n")
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    try:
        with GitDaemon(repo.parent) as daemon:
            for label, rate in (("loopback, unthrottled", None), ("throttled to 100 Mbit/s", 12.5e6)):
                compare(label, rate, daemon, repo, work, commit, tree)
        warm_path(work, commit, tree, repo, bench)
    finally:
        os.environ.clear()
        os.environ.update(env_keep)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def compare(label, rate, daemon, repo, work, commit, tree) -> None:
    from microtvm_registry.cache.store import Cache
    from microtvm_registry.registry.sources import GitSource

    with TcpProxy(daemon.port, rate=rate) as proxy:
        url = daemon.url(repo.name, port=proxy.port)
        counter = iter(range(1000))

        def full_clone():
            run_git(["clone", "-q", url, str(work / f"full{next(counter)}")])

        def sparse_clone():
            d = work / f"sparse{next(counter)}"
            run_git(["clone", "-q", "--depth", "1", "--filter=blob:none", "--sparse", url, str(d)])
            run_git(["sparse-checkout", "set", TEMPLATE], cwd=d)
            assert len(os.listdir(d / TEMPLATE)) == TEMPLATE_FILES

        source = GitSource(url, commit, TEMPLATE, tree)

        def ours():
            got = Cache(work / f"cache{next(counter)}").materialize(source, progress=False)
            assert got.content_id == tree

        print(f"\n[{label}] measuring (a) full clone, (b) hand-made sparse partial clone, (c) ours ...",
              flush=True)
        t_a, b_a = measure(proxy, full_clone, 1)
        t_b, b_b = measure(proxy, sparse_clone, 3)
        t_c, b_c = measure(proxy, ours, 3)
    for d in work.iterdir():
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
    print(f"  (a) full git clone:                {mib(b_a)}  {t_a:7.3f} s")
    print(f"  (b) depth-1 blobless sparse clone: {mib(b_b)}  {t_b:7.3f} s   (median of 3)")
    print(f"  (c) Cache.materialize (ours):      {mib(b_c)}  {t_c:7.3f} s   (median of 3)")
    line("bytes: ours vs (b)", mib(b_c), mib(b_b), b_c / b_b, "<= 1.5x", b_c <= 1.5 * b_b)
    line("time:  ours vs (b)", f"{t_c:.3f} s", f"{t_b:.3f} s", t_c / t_b, "<= 1.5x", t_c <= 1.5 * t_b)
    line("bytes: (a) full clone vs ours", mib(b_a), mib(b_c), b_a / b_c, ">= 20x", b_a >= 20 * b_c)
    line("time:  (a) full clone vs ours", f"{t_a:.3f} s", f"{t_c:.3f} s", t_a / t_c, ">= 20x", t_a >= 20 * t_c)


def time_cmd(argv, env, n=10) -> float:
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)  # warm the OS caches
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def warm_path(work: Path, commit: str, tree: str, repo: Path, bench: Path) -> None:
    """`microtvm path NAME@VERSION` on a warm cache vs `python -c pass`.

    Both run with bytecode caching on (as for an installed package); the .pyc files go to a
    prefix folder under the benchmark dir, not into the source tree.
    """
    print()
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(bench / "pycache")
    env["MICROTVM_REGISTRY_CACHE"] = str(work / "warm-cache")
    env["XDG_CONFIG_HOME"] = str(work / "xdg-config")
    env["XDG_CACHE_HOME"] = str(work / "xdg-cache")
    index = work / "bench-index.toml"
    index.write_text(
        "schema = 1\n\n[[template]]\nname = \"bench/tpl\"\ndescription = \"benchmark template\"\n"
        "platform = \"bench\"\n\n[[template.version]]\nversion = \"1.0.0\"\n"
        f"git = \"{repo.as_uri()}\"\ncommit = \"{commit}\"\nsubdir = \"{TEMPLATE}\"\ntree = \"{tree}\"\n"
    )
    py = sys.executable
    cli = [py, "-m", "microtvm_registry"]
    baseline = time_cmd([py, "-c", "pass"], env)
    how = "microtvm path bench/tpl@1.0.0"
    try:
        subprocess.run([*cli, "index", "add", "bench", str(index)], env=env, check=True, capture_output=True)
        subprocess.run([*cli, "fetch", "bench/tpl@1.0.0"], env=env, check=True, capture_output=True)
        out = subprocess.run([*cli, "--offline", "path", "bench/tpl@1.0.0"], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        assert Path(out).is_dir(), out
        argv = [*cli, "path", "bench/tpl@1.0.0"]
        exe = Path(py).with_name("microtvm")
        if exe.exists():
            argv = [str(exe), "path", "bench/tpl@1.0.0"]
    except (subprocess.CalledProcessError, AssertionError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        err = err.decode() if isinstance(err, bytes) else err
        print(f"  (microtvm path could not resolve the benchmark template: {err.strip()[-200:]}; "
              "timing a warm Cache.materialize in a fresh interpreter instead)")
        from microtvm_registry.cache.store import Cache
        from microtvm_registry.registry.sources import GitSource

        Cache(env["MICROTVM_REGISTRY_CACHE"]).materialize(GitSource(repo.as_uri(), commit, TEMPLATE, tree))
        how = "python -c '<warm Cache.materialize>'"
        argv = [py, "-c",
                "from microtvm_registry.cache.store import Cache\n"
                "from microtvm_registry.registry.sources import GitSource\n"
                f"print(Cache().materialize(GitSource({repo.as_uri()!r}, {commit!r}, {TEMPLATE!r}, {tree!r})).path)"]
    warm = time_cmd(argv, env)
    line(f"warm: {how}", f"{warm * 1000:.1f} ms", f"{baseline * 1000:.1f} ms", warm / baseline,
         "<= 3x", warm <= 3 * baseline)
    # our part alone: the cache's warm lookup in a fresh interpreter
    Cache = __import__("microtvm_registry.cache.store", fromlist=["Cache"]).Cache
    GitSource = __import__("microtvm_registry.registry.sources", fromlist=["GitSource"]).GitSource
    Cache(env["MICROTVM_REGISTRY_CACHE"]).materialize(GitSource(repo.as_uri(), commit, TEMPLATE, tree))
    argv = [py, "-c",
            "from microtvm_registry.cache.store import Cache\n"
            "from microtvm_registry.registry.sources import GitSource\n"
            f"print(Cache().materialize(GitSource({repo.as_uri()!r}, {commit!r}, {TEMPLATE!r}, {tree!r})).path)"]
    warm = time_cmd(argv, env)
    line("warm: python -c '<Cache.materialize, cached>'", f"{warm * 1000:.1f} ms", f"{baseline * 1000:.1f} ms",
         warm / baseline, "<= 3x", warm <= 3 * baseline)
    print("        (baseline: python -c pass; median of 10 runs each)")


if __name__ == "__main__":
    sys.exit(main())
