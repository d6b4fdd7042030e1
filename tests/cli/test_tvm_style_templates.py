"""TVM-shaped templates fetched by name and driven through our client, end to end.

The curated index names https://github.com/apache/tvm.git, which tests cannot reach. Here a
repository laid out like TVM's (template folders under apps/microtvm, the server library under
python/tvm/micro/project_api) is served by a real ``git daemon``, the upstream URL is pointed at
it with git's ``insteadOf`` (as a mirror would be), and an index of our own pins it the way the
curated one pins TVM's releases. The two template styles are TVM's two eras:

- v0.8-v0.11: ``microtvm_api_server.py`` does ``from tvm.micro.project_api import server`` and
  declares options in the v0.8 form (name, choices, help); it must run with no microTVM.
- v0.12+: started through ``launch_microtvm_api_server.sh`` (which wants five arguments) and
  doing ``import server`` from a copy placed beside it, which the index adds as an extra file
  from the same commit.

The server library in this repository is our own server.py standing in for TVM's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from registry_support import add_insteadof, run_cli, template_table, write_index
from support.servers import Executable, GitDaemon, make_repo, rev_parse

import microtvm_registry.project_api.server as our_server

UPSTREAM = "https://github.com/apache/tvm.git"
OLD_DIR = "apps/microtvm/arduino/template_project"
NEW_DIR = "apps/microtvm/zephyr/template_project"
LIB = "python/tvm/micro/project_api/server.py"

OLD_STYLE_SERVER = '''\
from tvm.micro.project_api import server

IS_TEMPLATE = True


class Handler(server.ProjectAPIHandler):
    def server_info_query(self, tvm_version):
        return server.ServerInfo(
            platform_name="arduino",
            is_template=IS_TEMPLATE,
            model_library_format_path="",
            project_options=[
                server.ProjectOption("arduino_board", choices=["due", "nano33ble"], help="board"),
                server.ProjectOption("arduino_cli_cmd", help="path to arduino-cli"),
                server.ProjectOption("verbose", choices=[True, False], help="chatty"),
            ],
        )

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        raise NotImplementedError()

    def build(self, options):
        raise NotImplementedError()

    def flash(self, options):
        raise NotImplementedError()

    def open_transport(self, options):
        raise NotImplementedError()

    def close_transport(self):
        pass

    def read_transport(self, n, timeout_sec):
        raise server.TransportClosedError()

    def write_transport(self, data, timeout_sec):
        raise server.TransportClosedError()


if __name__ == "__main__":
    server.main(Handler())
'''

NEW_STYLE_SERVER = OLD_STYLE_SERVER.replace(
    "from tvm.micro.project_api import server", "import server  # the copy beside this file"
).replace('platform_name="arduino"', 'platform_name="zephyr"').replace(
    '''                server.ProjectOption("arduino_board", choices=["due", "nano33ble"], help="board"),
                server.ProjectOption("arduino_cli_cmd", help="path to arduino-cli"),
                server.ProjectOption("verbose", choices=[True, False], help="chatty"),
''',
    '''                server.ProjectOption("board", type="str", required=["generate_project"],
                                     choices=["qemu_x86", "nucleo_f746zg"], help="board"),
                server.ProjectOption("verbose", type="bool", default=False,
                                     optional=["build"], help="chatty"),
''',
)

# Like TVM's launchers: insist on five arguments, then run the interpreter the user's toolchain
# has (here: this test's Python) on the .py path the client passes first.
LAUNCHER = """#!/bin/sh
if [ $# -lt 5 ]; then echo "usage: $0 SERVER --read-fd N --write-fd M" >&2; exit 255; fi
exec "{python}" "$1" "$2" "$3" "$4" "$5"
"""


@pytest.fixture(scope="module")
def tvm_like(tmp_path_factory):
    """A TVM-shaped repository served by git daemon, and an index pinning its two templates."""
    base = tmp_path_factory.mktemp("git")
    repo = base / "tvm"
    commit = make_repo(
        repo,
        {
            f"{OLD_DIR}/microtvm_api_server.py": OLD_STYLE_SERVER,
            f"{OLD_DIR}/boards.json": '{"due": {}}\n',
            f"{NEW_DIR}/microtvm_api_server.py": NEW_STYLE_SERVER,
            f"{NEW_DIR}/launch_microtvm_api_server.sh": Executable(LAUNCHER.format(python=sys.executable)),
            LIB: Path(our_server.__file__).read_text(),
            "README.md": "not part of any template\n",
        },
        message="release",
    )
    with GitDaemon(base) as daemon:
        yield {
            "daemon_url": daemon.url("tvm"),
            "commit": commit,
            "old_tree": rev_parse(repo, f"{commit}:{OLD_DIR}"),
            "new_tree": rev_parse(repo, f"{commit}:{NEW_DIR}"),
            "lib_blob": rev_parse(repo, f"{commit}:{LIB}"),
        }


@pytest.fixture
def registry(tvm_like, tmp_path):
    add_insteadof(UPSTREAM, tvm_like["daemon_url"])  # the mirror, through git's own config
    common = {"git": UPSTREAM, "ref": "v-test", "commit": tvm_like["commit"]}
    index = write_index(
        tmp_path / "tvm-like.toml",
        [
            template_table("tvmlike/arduino", [dict(common, version="0.8.0", subdir=OLD_DIR, tree=tvm_like["old_tree"],
                                                    requires={"tools": ["no-such-arduino-cli-xyz"]})],
                           platform="arduino"),
            template_table("tvmlike/zephyr", [dict(
                common, version="0.18.0", subdir=NEW_DIR, tree=tvm_like["new_tree"],
                extra=[{"path": LIB, "dest": "server.py", "blob": tvm_like["lib_blob"]}],
            )], platform="zephyr"),
        ],
    )
    proc = run_cli("index", "add", "tvmlike", str(index))
    assert proc.returncode == 0, proc.stderr
    return index


def _info(spec: str, *flags: str):
    proc = run_cli("info", spec, *flags, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_old_style_template_runs_without_microtvm(registry):
    refused = run_cli("info", "tvmlike/arduino@0.8.0")
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0
    assert "microtvm trust tvmlike/arduino@0.8.0" in refused.stderr

    # its build tool is missing, which asking for its options does not need: it answers, and says so
    proc = run_cli("info", "tvmlike/arduino@0.8.0", "--trust", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ("microtvm: note: tvmlike/arduino 0.8.0 needs `no-such-arduino-cli-xyz` on PATH to build "
                                   "and flash, which is missing: install no-such-arduino-cli-xyz and put it on PATH")
    info = json.loads(proc.stdout)
    assert info["platform_name"] == "arduino" and info["is_template"] is True
    assert info["protocol_version"] == 1
    board = info["project_options"][0]
    assert list(board) == ["name", "choices", "default", "type", "required", "optional", "help"]
    assert board["name"] == "arduino_board" and board["choices"] == ["due", "nano33ble"]


def test_new_style_template_runs_through_its_launcher_with_the_extra_server_copy(registry):
    assert run_cli("trust", "tvmlike/zephyr@0.18.0").returncode == 0
    info = _info("tvmlike/zephyr@0.18.0")  # trusted now: no flag needed
    assert info["platform_name"] == "zephyr"
    assert [o["name"] for o in info["project_options"]] == ["board", "verbose"]

    folder = Path(run_cli("--offline", "path", "tvmlike/zephyr@0.18.0").stdout.strip())
    assert (folder / "server.py").read_text() == Path(our_server.__file__).read_text()
    assert (folder / "launch_microtvm_api_server.sh").stat().st_mode & 0o111
    assert not (folder / "README.md").exists()  # only the pinned folder is materialized
    assert not list(folder.rglob("__pycache__"))  # the server ran without writing bytecode there
    verify = run_cli("cache", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_mirror_without_the_pinned_commit_is_one_clear_line(registry):
    # The curated pin for TVM v0.18.0 names a commit this mirror does not have: refused, and
    # nothing is left in the cache.
    proc = run_cli("fetch", "apache-tvm/zephyr@0.18.0")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()  # progress lines, then the one error line
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("microtvm: error: ") and "22a9d388d441" in lines[-1]
    assert all(not line.startswith("microtvm: error: ") for line in lines[:-1])
    listing = run_cli("cache", "list", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout) == []
