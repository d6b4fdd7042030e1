"""Soak: the registry under crashes, concurrency and hostile servers, with counts.

Run standalone: ``python benchmarks/soak.py [--kills 50] [--rounds 10]``. Everything is real: a
``git daemon`` and an HTTP server on 127.0.0.1, the CLI in real processes, real SIGKILLs. Each
section prints what it tried and what went wrong; the last lines are the totals that must be 0.

1. SIGKILL at random moments of a cold fetch (a ~1 MB template behind a throttled proxy), then a
   normal fetch: the entry must be complete and hash to its id (partial entries used: 0), and
   staging must be swept.
2. 8 processes fetch the same template into one cold cache at once: exactly one network fetch,
   every process gets the same verified folder.
3. 4 processes at once, ``--rounds`` times each: ``lock`` of different names into one lockfile,
   ``index add`` of different indexes, ``trust`` of different templates. Lost writes: 0.
4. One Ctrl-C during a git fetch from a server that never answers: time to exit (target <= 1 s).
5. Bounded downloads: a 503 with ``Retry-After: 100000`` under a 3 s deadline (time to fail), an
   endless archive body under a 1 MB limit (bytes written), a zip bomb under a 1 MB extraction
   limit.
6. Index parse time per template at 10,000 and 40,000 templates (ratio ~1 means linear; the old
   duplicate check made it ~4).
7. Hostile model files (needs the tvm extra), each through the real CLI with its peak RSS (the
   largest process of the command's tree) and time against bounds of 400 MB and 30 s: an MLF
   whose sparse member expands to 2 GiB and one whose sparse metadata.json is 1 GiB, at
   create-project; a 165-byte ONNX that folds into a 64 MiB constant, at compile; a records file
   with a 200 MB line, at compile --records. Each must be refused (or the line skipped) in one
   line, leaving nothing behind.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from registry_support import cli_command, template_table, write_index  # noqa: E402
from support.servers import GitDaemon, HttpServer, TcpProxy, make_repo, rev_parse  # noqa: E402

FAILURES = {"partial entries used": 0, "lost writes": 0, "extra network fetches": 0, "bounds exceeded": 0}


def env_for(home: Path) -> dict:
    env = dict(os.environ)
    env.update({
        "MICROTVM_REGISTRY_CACHE": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "xdg-cache"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
    })
    env.pop("XDG_RUNTIME_DIR", None)
    gitconfig = home / "gitconfig"
    if not gitconfig.exists():
        gitconfig.write_text("[user]\n\tname = soak\n\temail = soak@localhost\n[init]\n\tdefaultBranch = main\n")
    env["GIT_CONFIG_GLOBAL"] = str(gitconfig)
    return env


def run(argv, env, cwd=None, check=True):
    proc = subprocess.run(cli_command(*argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv}: {proc.stderr.strip()}")
    return proc


def make_big_repo(path: Path, n_files: int = 8, size: int = 128 * 1024) -> dict:
    files = {"tpl/microtvm_api_server.py": "print('soak')\n"}
    rng = random.Random(7)
    for i in range(n_files):
        files[f"tpl/blob{i}.bin"] = bytes(rng.getrandbits(8) for _ in range(size))
    commit = make_repo(path, files, "soak")
    return {"commit": commit, "tree": rev_parse(path, f"{commit}:tpl")}


def add_index(name: str, versions: list, home: Path, env: dict, template: str = "soak/t") -> None:
    index = write_index(home / f"{name}.toml", [template_table(template, versions)])
    run(["index", "add", name, str(index)], env)


def tree_of(folder: Path) -> str:
    sys.path.insert(0, str(HERE.parent))
    from microtvm_registry.contentid import tree_id

    return tree_id(folder)


def section_kills(tmp: Path, kills: int) -> None:
    print(f"1. SIGKILL at random moments of a cold fetch, {kills} times")
    home = tmp / "kills"
    home.mkdir()
    env = env_for(home)
    repo_root = tmp / "kill-repos"
    info = make_big_repo(repo_root / "big")
    used_partial = 0
    swept_ok = 0
    finished_before_kill = 0
    with GitDaemon(repo_root) as daemon, TcpProxy(daemon.port, rate=400_000) as proxy:
        url = f"git://127.0.0.1:{proxy.port}/big"
        add_index("kill", [{"version": "1.0", "git": url, "commit": info["commit"], "subdir": "tpl", "tree": info["tree"]}], home, env)
        rng = random.Random(11)
        for _ in range(kills):
            run(["cache", "clean"], env)
            proc = subprocess.Popen(cli_command("fetch", "soak/t"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            entry_done = (home / "cache" / "templates" / info["tree"]).is_dir()
            out = run(["fetch", "soak/t", "--json"], env)
            finished_before_kill += entry_done
            path = Path(json.loads(out.stdout)[0]["path"])
            if tree_of(path) != info["tree"]:
                used_partial += 1
            tmp_dir = home / "cache" / "tmp"
            left = os.listdir(tmp_dir) if tmp_dir.is_dir() else []
            if not left:
                swept_ok += 1

    FAILURES["partial entries used"] += used_partial
    print(f"  kills {kills} (of which {finished_before_kill} after the entry was complete)   partial entries used {used_partial}   "
          f"staging left and swept by the next miss or clean: {kills - swept_ok}")


def section_concurrent_fetch(tmp: Path) -> None:
    print("2. 8 processes fetch one template into one cold cache")
    home = tmp / "eight"
    home.mkdir()
    env = env_for(home)
    repo_root = tmp / "eight-repos"
    info = make_big_repo(repo_root / "big", n_files=4)
    with GitDaemon(repo_root) as daemon:
        add_index("eight", [{"version": "1.0", "git": daemon.url("big"), "commit": info["commit"], "subdir": "tpl", "tree": info["tree"]}], home, env)
        run(["fetch", "soak/t"], env)  # one process alone: how many upload-packs one fetch takes
        per_fetch = daemon.upload_pack_count("big")
        run(["cache", "clean"], env)
        procs = [subprocess.Popen(cli_command("fetch", "soak/t", "--json"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
        outs = [p.communicate(timeout=600) for p in procs]
        ok = sum(p.returncode == 0 for p in procs)
        paths = {json.loads(o)[0]["path"] for (o, _), p in zip(outs, procs) if p.returncode == 0}
        fetches = (daemon.upload_pack_count("big") - per_fetch) / max(1, per_fetch)
    FAILURES["extra network fetches"] += max(0, round(fetches) - 1) + (8 - ok)
    print(f"  processes 8   succeeded {ok}   distinct folders {len(paths)}   network fetches {fetches:g} "
          f"(one fetch = {per_fetch} upload-packs)")


def section_lost_writes(tmp: Path, rounds: int) -> None:
    print(f"3. lost writes: 4 processes at once, {rounds} rounds each of lock, index add, trust")
    home = tmp / "writes"
    home.mkdir()
    env = env_for(home)
    repo = tmp / "writes-repo"
    commits = []
    for n in range(4):
        commits.append(make_repo(repo, {"tpl/microtvm_api_server.py": f"print({n})\n"}, f"v{n}"))
    versions = [{"version": f"1.{n}", "git": str(repo), "commit": c, "subdir": "tpl", "tree": rev_parse(repo, f"{c}:tpl")}
                for n, c in enumerate(commits)]
    index = write_index(home / "w.toml", [template_table(f"w/t{n}", [versions[n]]) for n in range(4)]
                        + [template_table("w/multi", versions)])
    run(["index", "add", "w", str(index)], env)
    for n in range(4):
        run(["fetch", f"w/t{n}"], env)
        run(["fetch", f"w/multi@1.{n}"], env)
    project = home / "project"
    project.mkdir()
    lost = {"lock": 0, "index add": 0, "trust": 0}
    tried = {"lock": 0, "index add": 0, "trust": 0}
    extra_files = [write_index(home / f"x{n}.toml", [template_table(f"x{n}/t", [versions[0]])]) for n in range(4)]

    def all_at_once(commands, cwd=None):
        procs = [subprocess.Popen(cli_command(*c), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
        for p in procs:
            p.communicate(timeout=600)

    for _ in range(rounds):
        (project / "microtvm.lock").unlink(missing_ok=True)
        all_at_once([["lock", f"w/t{n}"] for n in range(4)], cwd=project)
        text = (project / "microtvm.lock").read_text() if (project / "microtvm.lock").exists() else ""
        tried["lock"] += 4
        lost["lock"] += sum(f'name = "w/t{n}"' not in text for n in range(4))

        for n in range(4):
            run(["index", "remove", f"x{n}"], env, check=False)
        all_at_once([["index", "add", f"x{n}", str(extra_files[n])] for n in range(4)])
        listed = json.loads(run(["index", "list", "--json"], env).stdout)
        tried["index add"] += 4
        lost["index add"] += sum(not any(r["name"] == f"x{n}" for r in listed) for n in range(4))

        trust_file = home / "config" / "microtvm-registry" / "trusted.toml"
        trust_file.unlink(missing_ok=True)
        all_at_once([["trust", f"w/multi@1.{n}"] for n in range(4)])
        text = trust_file.read_text() if trust_file.exists() else ""
        tried["trust"] += 4
        lost["trust"] += sum(v["tree"] not in text for v in versions)
    for kind in tried:
        print(f"  {kind:<10} writes {tried[kind]:>4}   lost {lost[kind]}")
    FAILURES["lost writes"] += sum(lost.values())


def section_ctrl_c(tmp: Path, runs: int = 10) -> None:
    print(f"4. one Ctrl-C during a git fetch from a server that never answers (median of {runs})")
    home = tmp / "ctrlc"
    home.mkdir()
    env = env_for(home)
    env["MICROTVM_REGISTRY_GIT_TIMEOUT"] = "600"
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    held = []

    def take():
        try:
            while True:
                held.append(hole.accept())
        except OSError:
            pass

    threading.Thread(target=take, daemon=True).start()
    add_index("hole", [{"version": "1.0", "git": f"git://127.0.0.1:{hole.getsockname()[1]}/r", "commit": "a" * 40, "subdir": "x", "tree": "b" * 40}], home, env)
    times = []
    for _ in range(runs):
        before = len(held)
        proc = subprocess.Popen(cli_command("fetch", "soak/t"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        while len(held) == before and proc.poll() is None:
            time.sleep(0.01)
        start = time.perf_counter()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        times.append(time.perf_counter() - start)
    hole.close()
    print(f"  exit after Ctrl-C: median {statistics.median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms   target <= 1000 ms")


def section_bounded(tmp: Path) -> None:
    print("5. bounded downloads")
    sys.path.insert(0, str(HERE.parent))
    from microtvm_registry.errors import FetchError
    from microtvm_registry.fetch.archive import fetch_archive
    from microtvm_registry.registry.sources import ArchiveSource

    with HttpServer(tmp / "www") as http:
        data = b"\0" * 1024
        http.put("a.tar", data)
        src = ArchiveSource(http.url("a.tar"), hashlib.sha256(data).hexdigest(), "", None)
        os.environ["MICROTVM_REGISTRY_DOWNLOAD_DEADLINE"] = "3"
        http.add_fault("a.tar", status=503, headers={"Retry-After": "100000"}, times=1000)
        start = time.perf_counter()
        try:
            fetch_archive(src, tmp / "o1")
        except FetchError:
            pass
        print(f"  503 + Retry-After 100000 under a 3 s deadline: failed after {time.perf_counter() - start:.1f} s (before: waited 100000 s)")
        http.clear_faults()
        os.environ.pop("MICROTVM_REGISTRY_DOWNLOAD_DEADLINE")
        os.environ["MICROTVM_REGISTRY_MAX_ARCHIVE_BYTES"] = str(1 << 20)
        http.add_fault("a.tar", endless=True)
        try:
            fetch_archive(src, tmp / "o2")
        except FetchError as err:
            print(f"  endless body under a 1 MiB limit: stopped ({str(err)[:70]}...); left on disk: {sum(1 for _ in tmp.glob('o2*'))} folders")
        os.environ.pop("MICROTVM_REGISTRY_MAX_ARCHIVE_BYTES")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("tpl/big.bin", b"\0" * (64 << 20))
        http.put("bomb.zip", buf.getvalue())
        os.environ["MICROTVM_REGISTRY_MAX_EXTRACTED_BYTES"] = str(1 << 20)
        bomb = ArchiveSource(http.url("bomb.zip"), hashlib.sha256(buf.getvalue()).hexdigest(), "tpl", None)
        try:
            fetch_archive(bomb, tmp / "o3")
        except FetchError:
            print(f"  zip bomb ({len(buf.getvalue()) // 1024} KiB -> 64 MiB) under a 1 MiB extraction limit: refused before writing; "
                  f"left on disk: {sum(1 for _ in tmp.glob('o3*'))} folders")
        os.environ.pop("MICROTVM_REGISTRY_MAX_EXTRACTED_BYTES")


def section_parse_scaling() -> None:
    print("6. index parse time per template")
    sys.path.insert(0, str(HERE.parent))
    from microtvm_registry.registry.index_format import parse_index
    from microtvm_registry.registry.models import Origin

    per = {}
    for n in (10_000, 40_000):
        doc = {"schema": 1, "template": [{"name": f"v/t{i}", "description": "d", "platform": "p", "version": [
            {"version": "1.0", "git": "https://example.com/r.git", "commit": "a" * 40, "subdir": "x", "tree": "b" * 40}]}
            for i in range(n)]}
        start = time.perf_counter()
        parse_index(doc, "soak", Origin("index", "soak", "soak", trusted=False, remote=True))
        per[n] = (time.perf_counter() - start) / n
    print(f"  10,000: {per[10_000] * 1e6:.1f} us/template   40,000: {per[40_000] * 1e6:.1f} us/template   "
          f"ratio {per[40_000] / per[10_000]:.2f} (1 = linear; quadratic would be 4)")


RSS_BOUND_MB = 400
TIME_BOUND_S = 30.0


def _measured(argv, env) -> tuple:
    """(peak RSS in MB of the command's largest process, seconds, the completed process): the
    command runs under a small Python parent that waits for it and reads RUSAGE_CHILDREN."""
    import json as _json

    code = ("import resource, subprocess, sys, time, json\n"
            "t = time.perf_counter()\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, time.perf_counter() - t, "
            "p.returncode, p.stderr]))\n")
    out = subprocess.run([sys.executable, "-c", code, *cli_command(*argv)], env=env, capture_output=True, text=True, timeout=900)
    rss, seconds, returncode, stderr = _json.loads(out.stdout)
    return rss, seconds, returncode, stderr


def _bounded(what: str, argv, env, left_behind) -> None:
    rss, seconds, returncode, stderr = _measured(argv, env)
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    ok = rss <= RSS_BOUND_MB and seconds <= TIME_BOUND_S and not left_behind()
    if not ok:
        FAILURES["bounds exceeded"] += 1
    print(f"  {what}: exit {returncode}, {rss} MB peak RSS, {seconds:.1f} s, left behind: {bool(left_behind())}   "
          f"bounds {RSS_BOUND_MB} MB, {TIME_BOUND_S:.0f} s{'' if ok else '   EXCEEDED'}")
    print(f"    {last[:150]}")


def _sparse_tar(path: Path, members) -> Path:
    """A plain tar of sparse members (GNU tar --sparse): a few KB on disk, ``size`` bytes each
    when extracted."""
    import shutil

    src = path.parent / f"{path.stem}-src"
    for name, size, data in members:
        member = src / name
        member.parent.mkdir(parents=True, exist_ok=True)
        with open(member, "wb") as fh:
            if data:
                fh.write(data)
            fh.truncate(size)
    subprocess.run(["tar", "--sparse", "-cf", str(path), "-C", str(src), "."], check=True)
    shutil.rmtree(src)
    return path


def section_hostile_models(tmp: Path) -> None:
    print("7. hostile model files: peak RSS and time")
    try:
        import onnx  # noqa: F401
        import tvm  # noqa: F401
    except ImportError:
        print("  left out: needs the tvm extra (pip install 'microtvm-registry[tvm]')")
        return
    from onnx import TensorProto, helper

    from support.onnx_models import constant_bomb

    (tmp / "home-models").mkdir()
    env = env_for(tmp / "home-models")
    meta = json.dumps({"modules": {"m": {"model_name": "m", "functions": []}}}).encode()
    big = _sparse_tar(tmp / "sparse-member.tar", [("metadata.json", len(meta), meta), ("codegen/host/src/big.c", 2 << 30, b"")])
    _bounded(f"MLF of {big.stat().st_size // 1024} KiB expanding to 2 GiB, create-project",
             ["create-project", "host", str(tmp / "p1"), "--mlf", str(big)], env, lambda: (tmp / "p1").exists())
    huge = _sparse_tar(tmp / "sparse-meta.tar", [("metadata.json", 1 << 30, b"{")])
    _bounded(f"MLF of {huge.stat().st_size // 1024} KiB with a 1 GiB metadata.json, create-project",
             ["create-project", "host", str(tmp / "p2"), "--mlf", str(huge)], env, lambda: (tmp / "p2").exists())
    model = constant_bomb()
    bomb = tmp / "bomb.onnx"
    bomb.write_bytes(model.SerializeToString())
    _bounded(f"ONNX of {bomb.stat().st_size} bytes folding into 64 MiB, compile",
             ["compile", str(bomb), "-o", str(tmp / "bomb.tar")], env, lambda: (tmp / "bomb.tar").exists())
    small = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])]), opset_imports=[helper.make_opsetid("", 13)])
    small.ir_version = 8
    (tmp / "small.onnx").write_bytes(small.SerializeToString())
    records = tmp / "records.jsonl"
    with open(records, "w") as fh:
        fh.write('{"workload": "' + "x" * (200 << 20) + '"}\n')
    _bounded("records whose one line is 200 MB, compile --records (skipped: no usable record, one line)",
             ["compile", str(tmp / "small.onnx"), "-o", str(tmp / "small.tar"), "--records", str(records)], env, lambda: False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        tmp = Path(tmp)
        section_kills(tmp, args.kills)
        section_concurrent_fetch(tmp)
        section_lost_writes(tmp, args.rounds)
        section_ctrl_c(tmp)
        section_bounded(tmp)
        section_parse_scaling()
        section_hostile_models(tmp)
    print("totals: " + ", ".join(f"{k} {v}" for k, v in FAILURES.items()) + "   (each must be 0)")
    return 0 if not any(FAILURES.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
