"""Fixtures for the cortex-m template: projects generated, built and flashed once per board, and a
check after every test that no QEMU it started is still running."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Dict

import pytest


from support.cortex_m import BOARDS, EMULATED, REAL, TEMPLATE, qemu_pids  # noqa: F401 - shared with the tests


@pytest.fixture(autouse=True)
def no_qemu_left_behind():
    before = set(qemu_pids())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = sorted(set(qemu_pids()) - before)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == [], f"QEMU processes left running: {left}"


@pytest.fixture(scope="session")
def cortex_m_template() -> Path:
    return TEMPLATE


class BuiltBoards:
    """Generated, built and flashed projects, one per board, made on first use."""

    def __init__(self, root: Path, mlf: Path) -> None:
        self.root = root
        self.mlf = mlf
        self.projects: Dict[str, Path] = {}

    def get(self, board: str, flash: bool = True) -> Path:
        from microtvm_registry.project import generate_project

        key = f"{board}{'' if flash else '-unflashed'}"
        if key not in self.projects:
            project = generate_project(TEMPLATE, self.mlf, self.root / key, {"board": board})
            try:
                project.build()
                if flash:
                    project.flash()
            finally:
                project.close()
            self.projects[key] = self.root / key
        return self.projects[key]


@pytest.fixture(scope="session")
def built_boards(tmp_path_factory, kernels_mlf) -> BuiltBoards:
    return BuiltBoards(tmp_path_factory.mktemp("boards"), kernels_mlf)


@pytest.fixture
def fresh_copy(tmp_path):
    """A private copy of a built project (tests that break it must not break the shared one)."""

    def copy(project: Path) -> Path:
        target = tmp_path / project.name
        shutil.copytree(project, target, symlinks=True)
        return target

    return copy
