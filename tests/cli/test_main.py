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
