"""The shipped board database: fresh, complete, and in agreement with the facts it is built from."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from microtvm_registry.boards.database import load_board_database
from microtvm_registry.errors import BoardError

REPO = Path(__file__).resolve().parents[2]
TVM_FACTS = REPO / "tools" / "data" / "tvm-boards.json"
SHARED_FACTS = REPO.parent / "shared" / "data" / "tvm-boards.json"


def _version(tag: str):
    return tuple(int(p) for p in tag.lstrip("v").split("."))


def test_the_committed_database_is_what_the_tool_builds():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "build_board_database.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(not SHARED_FACTS.is_file(), reason="no shared/ beside this checkout")
def test_the_tools_copy_of_tvms_facts_is_the_shared_one():
    assert json.loads(TVM_FACTS.read_text()) == json.loads(SHARED_FACTS.read_text())


def test_it_agrees_with_tvms_boards_json_for_every_board_both_name():
    db = load_board_database()  # the shipped file, as `microtvm boards` reads it
    tags = json.loads(TVM_FACTS.read_text())["tags"]
    checked = 0
    for tag in sorted(tags, key=_version):
        for platform, listed in tags[tag].items():
            for name, entry in listed.items():
                board = db.get(name)  # every board TVM lists is known, by its name or an alias
                assert board.emulated == bool(entry.get("is_qemu", False)), (tag, name)
                if entry.get("vid_hex"):
                    assert f"{entry['vid_hex'].lower()}:{entry['pid_hex'].lower()}" in {u.id for u in board.usb}, (tag, name)
                template = next(t for t in board.templates if t.template == f"apache-tvm/{platform}")
                first, last = template.versions
                assert _version(first) <= _version(tag) <= _version(last), (tag, name)
                checked += 1
    assert checked > 200  # 11 releases x ~20 boards


def test_every_board_of_the_cortex_m_template_is_there_with_its_option():
    boards = json.loads((REPO / "templates" / "cortex-m" / "boards.json").read_text())["boards"]
    db = load_board_database()
    for b in boards:
        entry = db.get(b["name"])
        assert entry.core == b["core"] and entry.emulated == (b.get("qemu") is not None)
        assert any(t.use == f"cortex-m -o board={b['name']}" for t in entry.templates)


def test_latest_tvm_template_and_option_are_what_a_user_types():
    l4r5 = load_board_database().get("nucleo_l4r5zi")
    uses = {t.template: t.use for t in l4r5.templates}
    assert uses == {
        "cortex-m": "cortex-m -o board=nucleo_l4r5zi",
        "apache-tvm/zephyr": "apache-tvm/zephyr@0.18.0 -o board=nucleo_l4r5zi",
    }
    assert l4r5.flash_bytes == 2 * 1024 * 1024 and l4r5.ram_bytes == 640 * 1024 and l4r5.clock_hz == 120_000_000
    assert [(u.id, u.kind) for u in l4r5.usb] == [("0483:374b", "debug-probe")]


def test_aliases_filters_and_unknown_names():
    db = load_board_database()
    assert db.get("mps3_an547") is db.get("mps3-an547")  # TVM's zephyr name of our emulated M55
    assert {b.name for b in db.select(template="zephyr", core="cortex-m7")} == {"mimxrt1050_evk", "nucleo_f746zg", "stm32f746g_disco"}
    assert all(b.emulated for b in db.select(emulated=True)) and db.select(emulated=True)
    assert {b.name for b in db.select(template="cortex-m", emulated=True)} >= {"mps2-an385", "mps2-an386", "mps3-an547"}
    with pytest.raises(BoardError, match=r"unknown board 'nucleo_l4r5z'; did you mean nucleo_l4r5zi"):
        db.get("nucleo_l4r5z")


def test_a_damaged_database_is_one_clear_error(tmp_path):
    bad = tmp_path / "boards.json"
    bad.write_text('{"boards": [{"name": "x"}]')
    with pytest.raises(BoardError, match=r"cannot read the board database .*boards.json.*reinstall"):
        load_board_database(bad)
