"""contentid must agree with real git byte for byte: compare against `git add -A && git write-tree`."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microtvm_registry import contentid
from microtvm_registry.contentid import tree_id
from support.servers import git


def git_tree(folder: Path, gitdir: Path) -> str:
    """What git itself says: a throwaway index for `folder`, then write-tree."""
    if gitdir.exists():
        subprocess.run(["rm", "-rf", str(gitdir)], check=True)
    git(["init", "-q", "--bare", str(gitdir)])
    args = [f"--git-dir={gitdir}", f"--work-tree={folder}", "-c", "core.fileMode=true"]
    git([*args, "add", "-A", "."], cwd=folder)
    return git([*args, "write-tree"], cwd=folder)


def write(root: Path, rel: str, data: bytes = b"", mode: int = 0o644) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    p.chmod(mode)


def test_blob_id_matches_git_hash_object(tmp_path):
    for data in (b"", b"hello\n", os.urandom(3000), b"\0\xff" * 100):
        f = tmp_path / "f"
        f.write_bytes(data)
        assert contentid.blob_id(data) == git(["hash-object", str(f)])
        assert contentid.file_blob_id(f) == contentid.blob_id(data)


def test_tricky_names_modes_symlinks_and_empty_dirs(tmp_path):
    root = tmp_path / "t"
    # names that sort differently as files vs trees: "a", "a.b", "a/" , "a0", "a-"
    write(root, "a.b", b"dot")
    write(root, "a/inner", b"in a")
    write(root, "a0", b"zero")
    write(root, "a-", b"dash")
    write(root, "b/a.b/x", b"deep")
    write(root, "b/a", b"file named a next to folder a.b")
    write(root, "run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write(root, "user-exec-only", b"x", 0o700)
    write(root, "group-exec-only", b"x", 0o654)  # not owner-exec: git says 100644
    write(root, "ünïcødé name.txt", "é".encode())
    os.symlink("a.b", root / "link-to-file")
    os.symlink("../outside/nowhere", root / "b" / "dangling")
    os.symlink("a", root / "link-to-dir")
    (root / "empty" / "nested-empty").mkdir(parents=True)
    write(root, "big.bin", os.urandom(3 * 1024 * 1024 + 7))
    expected = git_tree(root, tmp_path / "g")
    assert contentid.tree_id(root) == expected


def test_empty_folder_is_the_empty_tree(tmp_path):
    (tmp_path / "e" / "sub").mkdir(parents=True)
    assert contentid.tree_id(tmp_path / "e") == contentid.EMPTY_TREE_ID
    assert git_tree(tmp_path / "e", tmp_path / "g") == contentid.EMPTY_TREE_ID


def test_subtree_matches_rev_parse_of_a_commit(tmp_path):
    from support.servers import Executable, Symlink, make_repo, rev_parse

    repo = tmp_path / "repo"
    commit = make_repo(
        repo,
        {
            "tpl/microtvm_api_server.py": "print('hi')\n",
            "tpl/src/main.c": "int main(){}\n",
            "tpl/qemu-hack/qemu": Executable("#!/bin/sh\n"),
            "tpl/link": Symlink("src/main.c"),
            "other/file": "x",
        },
    )
    assert contentid.tree_id(repo / "tpl") == rev_parse(repo, f"{commit}:tpl")


def test_changes_change_the_id(tmp_path):
    root = tmp_path / "t"
    write(root, "f", b"one")
    first = contentid.tree_id(root)
    (root / "f").chmod(0o755)
    second = contentid.tree_id(root)
    write(root, "f", b"two", 0o755)
    third = contentid.tree_id(root)
    assert len({first, second, third}) == 3


def test_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        contentid.tree_id(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        contentid.tree_id(tmp_path / "file")


def test_is_object_id():
    assert contentid.is_object_id("a" * 40)
    for bad in ("A" * 40, "a" * 39, "g" * 40, "-" + "a" * 39, None, 5):
        assert not contentid.is_object_id(bad)


_names = st.sampled_from(["a", "a.b", "a-", "a0", "b", "A", "a b", "z", "é", "a.b.c", "_"])
_kinds = st.sampled_from(["file", "exec", "link", "dir"])


@st.composite
def _trees(draw, depth=0):
    spec = {}
    for name in draw(st.lists(_names, max_size=5, unique=True)):
        kind = draw(_kinds) if depth < 2 else draw(st.sampled_from(["file", "exec", "link"]))
        if kind == "dir":
            spec[name] = draw(_trees(depth + 1))
        else:
            spec[name] = (kind, draw(st.binary(max_size=64)))
    return spec


def _build(root: Path, spec) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        if isinstance(value, dict):
            _build(root / name, value)
            continue
        kind, data = value
        if kind == "link":
            os.symlink(data.hex() or "x", root / name)
        else:
            write(root, name, data, 0o755 if kind == "exec" else 0o644)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=_trees())
def test_random_trees_match_git(tmp_path, spec):
    import uuid

    case = tmp_path / uuid.uuid4().hex
    _build(case / "t", spec)
    assert contentid.tree_id(case / "t") == git_tree(case / "t", case / "g")


def test_a_mounted_folder_hashes_as_if_it_were_a_subfolder(tmp_path):
    import shutil

    template, shared = tmp_path / "template", tmp_path / "shared"
    (template / "src").mkdir(parents=True)
    (template / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (shared / "runtime").mkdir(parents=True)
    (shared / "runtime" / "rt.c").write_text("/* shared */\n")
    together = tmp_path / "together"
    shutil.copytree(template, together)
    shutil.copytree(shared, together / "common")
    assert tree_id(template, {"common": shared}) == tree_id(together)
    (shared / "runtime" / "rt.c").write_text("/* changed */\n")
    assert tree_id(template, {"common": shared}) != tree_id(together)
    with pytest.raises(ValueError, match="cannot be mounted"):
        tree_id(together, {"common": shared})
