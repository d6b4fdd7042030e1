"""Content ids: the git object ids of files and folders, computed in pure Python.

A template's content id is the git *tree* id of its materialized folder, i.e. what
``git add -A && git write-tree`` prints for it (in a repository with ``core.fileMode=true`` and no
ignore rules). Using git's own object format means one id names the same template whether it
came from a git commit, an archive, the wheel or a plugin, and ``git rev-parse COMMIT:subdir`` on
the server side already tells us the id before we download a byte.

We compute it with hashlib instead of shelling out to git because the warm path and
``microtvm cache verify`` hash every entry and must not depend on (or pay for) a git subprocess.

The rules git applies, mirrored here:

- a regular file is a blob with mode ``100755`` when the owner-exec bit is set, else ``100644``;
- a symlink is a blob (mode ``120000``) whose content is the link target's bytes;
- a folder is a tree (mode ``40000``); folders with no files anywhere below them are omitted;
- entries sort bytewise by name, where a subtree sorts as if its name ended in ``/``
  (so ``a.b`` < ``a/`` < ``a0``);
- other file types (sockets, fifos, devices) are not content: git skips them, and so do we.

Nothing is skipped by name: a ``.git`` or ``.gitignore`` in the folder is hashed like any
other entry (a fetched template never contains ``.git``; hashing it would reveal tampering).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

__all__ = ["blob_id", "file_blob_id", "tree_id", "is_object_id", "EMPTY_TREE_ID"]

#: The id of git's empty tree (a folder with no files at all).
EMPTY_TREE_ID = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

_HEX = frozenset("0123456789abcdef")
_CHUNK = 1 << 20


def is_object_id(text: object) -> bool:
    """True for a full lowercase SHA-1 hex object id (40 characters)."""
    return isinstance(text, str) and len(text) == 40 and all(c in _HEX for c in text)


def blob_id(data: bytes) -> str:
    """The git blob id of ``data`` (``git hash-object --stdin``)."""
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def file_blob_id(path: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]) -> str:
    """The git blob id of the file at ``path`` (read in chunks: large files stay cheap)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha1(b"blob %d\0" % size)
        read = 0
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            read += len(chunk)
            h.update(chunk)
    if read != size:  # changed under us: hash what we actually read, consistently
        with open(path, "rb") as f:
            return blob_id(f.read())
    return h.hexdigest()


def _tree_digest(folder: bytes, mounts: Optional[Dict[bytes, bytes]] = None, skip: frozenset = frozenset()) -> Optional[bytes]:
    """Raw 20-byte tree id of ``folder`` (bytes path), or None when it holds no files; folders
    named in ``skip`` are left out at every level."""
    entries: List[Tuple[bytes, bytes, bytes]] = []  # (sort key, mode, raw id)
    for name, sub_folder in (mounts or {}).items():
        sub = _tree_digest(sub_folder, None, skip)
        if sub is not None:
            entries.append((name + b"/", b"40000", sub))
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if mounts and name in mounts:
                raise ValueError(f"{os.fsdecode(entry.path)} exists, so {os.fsdecode(name)!r} cannot be mounted there")
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(entry.path)
                raw = hashlib.sha1(b"blob %d\0" % len(target) + target).digest()
                entries.append((name, b"120000", raw))
            elif stat.S_ISREG(mode):
                raw = bytes.fromhex(file_blob_id(entry.path))
                entries.append((name, b"100755" if mode & stat.S_IXUSR else b"100644", raw))
            elif stat.S_ISDIR(mode):
                if name in skip:
                    continue
                sub = _tree_digest(entry.path, None, skip)
                if sub is not None:
                    entries.append((name + b"/", b"40000", sub))
    if not entries:
        return None
    entries.sort(key=lambda e: e[0])
    body = bytearray()
    for key, kind, digest in entries:
        name = key[:-1] if kind == b"40000" else key
        body += kind + b" " + name + b"\0" + digest
    h = hashlib.sha1(b"tree %d\0" % len(body))
    h.update(body)
    return h.digest()


def tree_id(
    folder: Union[str, os.PathLike],
    mounts: Optional[Mapping[str, Union[str, os.PathLike]]] = None,
    skip_dirs: Iterable[str] = (),
) -> str:
    """The git tree id of ``folder`` (``git add -A && git write-tree`` for its contents).

    ``mounts`` (name -> folder) hashes other folders as if they were subfolders of ``folder``
    under those names: a packaged template built from shared files (``templates/common``) gets
    one id that covers everything it builds from, without a second copy in the repository.

    ``skip_dirs`` names folders left out wherever they occur (as a ``.gitignore`` would): the
    ``__pycache__`` that pip's byte-compilation puts into an installed package's templates.

    Raises FileNotFoundError / NotADirectoryError when ``folder`` is not a folder.
    """
    path = os.fsencode(os.fspath(folder))
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise NotADirectoryError(f"not a folder: {Path(os.fsdecode(path))}")
        raise FileNotFoundError(f"no such folder: {Path(os.fsdecode(path))}")
    encoded = {os.fsencode(k): os.fsencode(os.fspath(v)) for k, v in (mounts or {}).items()}
    for name, sub in encoded.items():
        if not os.path.isdir(sub):
            raise FileNotFoundError(f"no such folder to mount as {os.fsdecode(name)!r}: {os.fsdecode(sub)}")
    raw = _tree_digest(path, encoded, frozenset(os.fsencode(d) for d in skip_dirs))
    return EMPTY_TREE_ID if raw is None else raw.hex()
