"""A C kernel library (CMSIS-NN) as compile sees it: a verified folder from the registry, which of
its sources a model's calls need, and a small program of ours built from it on this machine to
answer what only the library knows (the scratch bytes a call needs on a given core).

Why a program and not formulas of our own: a library's buffer sizes change between versions and
per core (plain C, DSP, MVE). Its own ``*_get_buffer_size_dsp`` / ``_mve`` functions, compiled
for this machine, give the numbers a firmware built for that core will ask for, for whatever
version the project pins.

Which sources: a firmware links only what the model calls. The sources' text is read once for the
functions each defines and the library functions each names (in any branch of its ``#if``s: a
superset is safe), and the closure from the entry points is what a project builds. That also
keeps out the float sources, which do not compile with default flags.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ...errors import ModelError

_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_DEFINITION_RE = re.compile(r"\b([A-Za-z_]\w*)\s*\(([^;{}()]*(?:\([^;{}()]*\)[^;{}()]*)*)\)\s*\{")
_IDENT_RE = re.compile(r"\b([A-Za-z_]\w*)\b")
_NOT_FUNCTIONS = {"if", "for", "while", "switch", "return", "sizeof"}


@dataclass(frozen=True)
class KernelLibrary:
    """A library version as the registry materialized it (content id verified)."""

    name: str  # "arm/cmsis-nn"
    version: str
    content_id: str
    folder: Path
    license: str = ""

    def facts(self) -> Dict[str, str]:
        """What the Model Library Format records of it (and a project's build reads)."""
        return {"name": self.name, "version": self.version, "content_id": self.content_id, "license": self.license}


@dataclass
class SourceIndex:
    """Which functions each source file defines and which names it uses."""

    root: Path
    defines: Dict[str, str] = field(default_factory=dict)  # function -> file (relative to root)
    uses: Dict[str, Set[str]] = field(default_factory=dict)  # file -> identifiers it names

    @classmethod
    def scan(cls, root: Path, sources: Iterable[str]) -> "SourceIndex":
        index = cls(Path(root))
        for rel in sources:
            text = _COMMENT_RE.sub(" ", (index.root / rel).read_text(encoding="utf-8", errors="replace"))
            index.uses[rel] = set(_IDENT_RE.findall(text))
            for match in _DEFINITION_RE.finditer(text):
                name = match.group(1)
                head = re.split(r"[;}]|\n\s*#", text[max(0, match.start() - 300):match.start()])[-1]
                if name not in _NOT_FUNCTIONS and not re.search(r"\bstatic\b", head):  # file-local: links nothing
                    index.defines.setdefault(name, rel)
        return index

    def closure(self, entries: Iterable[str]) -> List[str]:
        """The files that define ``entries`` and everything they name, transitively."""
        wanted = list(entries)
        missing = [e for e in wanted if e not in self.defines]
        if missing:
            raise ModelError(f"the kernel library at {self.root} defines no {missing[0]}; pin a version that has it")
        files: Set[str] = set()
        todo = [self.defines[e] for e in wanted]
        while todo:
            rel = todo.pop()
            if rel in files:
                continue
            files.add(rel)
            todo += [self.defines[name] for name in self.uses[rel] if name in self.defines and self.defines[name] not in files]
        return sorted(files)


def integer_sources(folder: Path) -> List[str]:
    """The library's C sources under Source/ that integer kernels can need (float ones left out)."""
    found = []
    for path in sorted((Path(folder) / "Source").rglob("*.c")):
        rel = path.relative_to(folder).as_posix()
        stem = path.stem
        if stem.endswith(("_f16", "_f32")) or "_flt" in stem:
            continue
        found.append(rel)
    return found


def host_compiler() -> str:
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    raise ModelError("compiling with a kernel library needs a C compiler on this machine (cc, gcc or clang); "
                     "install one (apt-get install gcc)")


class HostProgram:
    """A program of ours (``driver``, C) linked with the library sources it needs, built once per
    library content id and driver text into the cache, and run with requests on stdin."""

    def __init__(self, library: KernelLibrary, name: str, driver: str, entries: Sequence[str]) -> None:
        self.library = library
        self.name = name
        self.driver = driver
        self.entries = list(entries)

    def _path(self) -> Path:
        from ...dirs import cache_dir

        key = hashlib.sha256((self.library.content_id + "\0" + self.driver).encode()).hexdigest()[:20]
        return cache_dir() / "build" / f"{self.name}-{key}"

    def build(self) -> Path:
        exe = self._path() / self.name
        if exe.is_file():
            return exe
        import os
        import tempfile

        folder = self.library.folder
        index = SourceIndex.scan(folder, integer_sources(folder))
        sources = [str(folder / rel) for rel in index.closure(self.entries)]
        exe.parent.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{self.name}-", dir=str(exe.parent.parent)))
        try:
            (work / "driver.c").write_text(self.driver)
            command = [host_compiler(), "-O1", "-std=gnu11", "-w", f"-I{folder / 'Include'}", "-o", str(work / self.name),
                       str(work / "driver.c"), *sources, "-lm"]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise ModelError(f"building the {self.library.name} {self.library.version} helper on this machine failed: {last}")
            try:
                os.rename(work, exe.parent)
            except OSError:  # another compile built it meanwhile: theirs is the same program
                pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return exe

    def ask(self, requests: Sequence[str]) -> List[List[int]]:
        """One line of integers per request line."""
        if not requests:
            return []
        exe = self.build()
        done = subprocess.run([str(exe)], input="\n".join(requests) + "\n", capture_output=True, text=True)
        answers = done.stdout.splitlines()
        if done.returncode != 0 or len(answers) != len(requests):
            raise ModelError(f"the {self.library.name} helper failed ({done.stderr.strip()[:200] or 'no output'}); "
                             "clear the cache's build/ folder and compile again")
        return [[int(v) for v in line.split()] for line in answers]


def load_library(spec: str, *, content_id: Optional[str] = None) -> KernelLibrary:
    """The kernel library ``spec`` names, verified in the cache (fetched unless offline; the
    project's microtvm.lock pin first)."""
    from ...template_paths import library_for_build

    folder, version, found = library_for_build(spec, content_id=content_id)
    return KernelLibrary(version.name, version.version, found, Path(folder), version.license)


def copy_sources(library: KernelLibrary, sources: Sequence[str], dest: Path) -> None:
    """The library's Include/ and the given sources, into ``dest`` (a project's lib/ folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(library.folder / "Include", dest / "Include", dirs_exist_ok=True)
    for rel in sources:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library.folder / rel, target)
    for extra in ("LICENSE", "LICENSE.txt"):
        if (library.folder / extra).is_file():
            shutil.copy2(library.folder / extra, dest / extra)


def entry_files(library: KernelLibrary, entries: Sequence[str]) -> Tuple[List[str], SourceIndex]:
    index = SourceIndex.scan(library.folder, integer_sources(library.folder))
    return index.closure(entries), index


__all__ = ["KernelLibrary", "SourceIndex", "HostProgram", "integer_sources", "copy_sources", "entry_files", "host_compiler",
           "load_library"]
