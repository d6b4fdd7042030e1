"""The CLI's contract: exit statuses and one-line errors."""
import subprocess
import sys


def run_cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "microtvm_registry", *args], capture_output=True, text=True, **kw
    )


def test_help_exits_zero():
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "microtvm" in proc.stdout


def test_usage_error_exits_two():
    proc = run_cli("no-such-command")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


import pytest

from microtvm_registry.cli import _parse_path_fast, build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["path", "host"],
        ["--offline", "path", "host"],
        ["path", "--offline", "apache-tvm/zephyr@0.18.0"],
        ["path", "zephyr@>=0.12,<0.19", "--offline"],
    ],
)
def test_fast_path_parse_agrees_with_argparse(argv):
    fast = _parse_path_fast(argv)
    slow = build_parser(argv).parse_args(argv)
    assert fast is not None
    assert (fast.spec, fast.offline, fast.handler) == (slow.spec, slow.offline, slow.handler)


@pytest.mark.parametrize("argv", [["path"], ["path", "a", "b"], ["path", "-v", "host"], ["path", "--help"], ["list"]])
def test_fast_path_leaves_everything_else_to_argparse(argv):
    assert _parse_path_fast(argv) is None


def test_path_prints_the_packaged_host_template():
    proc = run_cli("path", "host")
    assert proc.returncode == 0, proc.stderr
    folder = proc.stdout.strip()
    assert folder.endswith("host")
    import os

    assert os.path.isfile(os.path.join(folder, "microtvm_api_server.py"))


def test_group_map_names_every_registered_command():
    from microtvm_registry.cli import GROUPS

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) == {c for commands in GROUPS.values() for c in commands}
    for commands in GROUPS.values():  # each group alone registers exactly its own commands
        only = build_parser([commands[0]])
        sub = next(a for a in only._actions if a.dest == "command")
        assert set(sub.choices) == set(commands)


@pytest.mark.parametrize("argv", [[], ["path", "host"], ["list"], ["show", "host"]])
def test_package_import_and_warm_commands_stay_free_of_heavy_imports(argv):
    code = (
        "import sys, io, contextlib\n"
        "import microtvm_registry\n"
        f"argv = {argv!r}\n"
        "if argv:\n"
        "    from microtvm_registry.cli import main\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv) == 0\n"
        "heavy = sorted(m for m in ('git', 'requests', 'urllib3', 'numpy', 'tvm', 'tqdm') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_version_flag_prints_the_package_version():
    import subprocess
    import sys

    from microtvm_registry import __version__

    out = subprocess.run([sys.executable, "-m", "microtvm_registry", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"microtvm {__version__}"


def test_building_the_package_prints_no_license_deprecation(tmp_path):
    """`project.license` as today's setuptools wants it, an SPDX string: `make demo` printed its
    deprecation warning once per build step."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path), str(root)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "Building wheel for microtvm-registry" in text  # the backend's output is there to read
    assert "project.license" not in text and "SPDX" not in text
    assert "BuildBackendWarning" not in text and "absent from" not in text  # every shipped folder is declared


def test_ctrl_c_during_a_git_fetch_ends_everything_at_once(tmp_path):
    """A git server that accepts and never answers: one Ctrl-C (SIGINT to the process group, as a
    terminal sends it) ends the command with 130 and one line, and leaves no process behind
    (GitPython's watchdog timer used to keep it alive for the whole git timeout)."""
    import os
    import signal
    import socket
    import subprocess
    import threading
    import time

    from registry_support import cli_command, template_table, write_index

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    accepted = []

    def take() -> None:
        try:
            while True:
                accepted.append(hole.accept())
        except OSError:  # closed at the end of the test
            pass

    threading.Thread(target=take, daemon=True).start()
    version = {"version": "1.0", "git": f"git://127.0.0.1:{hole.getsockname()[1]}/r", "commit": "a" * 40, "subdir": "x", "tree": "b" * 40}
    index = write_index(tmp_path / "hole.toml", [template_table("hole/t", [version])])
    assert subprocess.run(cli_command("index", "add", "hole", str(index)), capture_output=True).returncode == 0
    proc = subprocess.Popen(cli_command("fetch", "hole/t"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "MICROTVM_REGISTRY_GIT_TIMEOUT": "600"})
    try:
        while not accepted and proc.poll() is None:  # git has connected and is waiting
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=60)  # only stops a hang; the fix ends it in milliseconds
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        hole.close()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "microtvm: interrupted"
    assert "Traceback" not in err
    assert _live_members_of_group(proc.pid) == [], "a process of the command outlived it"


def _live_members_of_group(pgid):
    """Processes (not zombies) whose process group is ``pgid``, after letting SIGTERM land."""
    import os
    import time

    for _ in range(50):
        live = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                raw = open(f"/proc/{entry}/stat", "rb").read()
            except OSError:
                continue
            fields = raw[raw.rfind(b")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                live.append(int(entry))
        if not live:
            return []
        time.sleep(0.05)
    return live
