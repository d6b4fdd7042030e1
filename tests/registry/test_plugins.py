"""Plugins: an installed vendor package's entry points make its templates appear by name.

The "installed package" is real: a dist-info folder with METADATA and entry_points.txt beside
the package, on PYTHONPATH of a subprocess (or sys.path), exactly what pip leaves behind.
"""
from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path


from registry_support import run_cli

SERVER = "# vendor server\nprint('hello from {name}')\n"


def make_plugin_site(root: Path, module: str = "acme_microtvm", dist: str = "acme-microtvm", broken: bool = False) -> Path:
    site = root / "site"
    pkg = site / module
    (pkg / "template").mkdir(parents=True)
    (pkg / "template" / "microtvm_api_server.py").write_text(SERVER.format(name="blinky"))
    (pkg / "boards" / "nano").mkdir(parents=True)
    (pkg / "boards" / "nano" / "microtvm_api_server.py").write_text(SERVER.format(name="nano"))
    (site / "elsewhere").mkdir()
    (site / "elsewhere" / "microtvm_api_server.py").write_text(SERVER.format(name="called"))
    (pkg / "templates.toml").write_text(textwrap.dedent("""\
        schema = 1
        [[template]]
        name = "acme/nano"
        description = "Acme Nano board"
        platform = "acme"
        [[template.version]]
        version = "3.0.0"
        path = "boards/nano"
        [template.version.requires]
        tools = ["acme-flash"]
        """))
    (pkg / "__init__.py").write_text(textwrap.dedent("""\
        from pathlib import Path
        TEMPLATE_DIR = "template"
        INDEX = "templates.toml"
        def describe():
            return [{"name": "acme/called", "platform": "acme", "description": "from a callable",
                     "version": [{"version": "0.5.0", "path": str(Path(__file__).parent.parent / "elsewhere")}]}]
        """))
    info = site / f"{module}-1.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.0\nSummary: Acme boards for microTVM\n")
    (info / "RECORD").write_text("")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [microtvm_registry.templates]
        acme/blinky = {module}:TEMPLATE_DIR
        acme-index = {module}:INDEX
        acme-call = {module}:describe
        """))
    if broken:
        bad = site / "broken_plugin-0.1.dist-info"
        bad.mkdir()
        (bad / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
        (bad / "entry_points.txt").write_text("[microtvm_registry.templates]\nbroken = no_such_module_xyz:THING\n")
    return site


def _env(site: Path) -> dict:
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(site) + (os.pathsep + old if old else "")}


def test_plugin_templates_appear_by_name(tmp_path):
    site = make_plugin_site(tmp_path, broken=True)
    env = _env(site)
    proc = run_cli("list", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"acme/blinky", "acme/nano", "acme/called", "host", "apache-tvm/zephyr"} <= set(rows)
    assert rows["acme/blinky"]["latest"] == "1.2.0"  # the distribution's version
    assert rows["acme/blinky"]["from"] == "acme-microtvm" and rows["acme/blinky"]["source"] == "folder"
    assert rows["acme/nano"]["latest"] == "3.0.0" and rows["acme/nano"]["platform"] == "acme"
    assert rows["acme/called"]["description"] == "from a callable"
    # The broken plugin is one warning line; it hides nothing else.
    warnings = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(warnings) == 1 and "broken-plugin" in warnings[0] and warnings[0].startswith("microtvm: warning:")

    for name, folder in [("blinky", site / "acme_microtvm" / "template"), ("acme/nano", site / "acme_microtvm" / "boards" / "nano"), ("called", site / "elsewhere")]:
        proc = run_cli("path", name, env=env)
        assert proc.returncode == 0, proc.stderr
        assert Path(proc.stdout.strip()) == folder.resolve()

    proc = run_cli("show", "acme/nano", env=env)
    assert proc.returncode == 0 and "acme-flash" in proc.stdout and "MISSING" in proc.stdout
    assert "microtvm trust acme/nano@3.0.0" in proc.stdout


def test_plugin_templates_need_trust_to_run(tmp_path):
    site = make_plugin_site(tmp_path)
    env = _env(site)
    code = "from microtvm_registry.template_paths import get_template_for_run as g; print(g('acme/blinky'))"
    proc = _python(code, env)
    assert proc.returncode != 0 and "TrustError" in proc.stderr and "microtvm trust acme/blinky@1.2.0" in proc.stderr
    assert run_cli("trust", "acme/blinky", env=env).returncode == 0
    proc = _python(code, env)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == (site / "acme_microtvm" / "template").resolve()
    # The vendor's folder changes (a new release installed over it): ask again.
    (site / "acme_microtvm" / "template" / "microtvm_api_server.py").write_text("print('changed')\n")
    proc = _python(code, env)
    assert proc.returncode != 0 and "changed since you trusted it" in proc.stderr


def test_lock_pins_a_plugin_template(tmp_path):
    site = make_plugin_site(tmp_path)
    env = _env(site)
    project = tmp_path / "project"
    project.mkdir()
    proc = run_cli("lock", "acme/nano", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    text = (project / "microtvm.lock").read_text()
    assert 'plugin = "acme-microtvm"' in text and str(site) not in text  # no machine-specific path
    assert run_cli("sync", "--frozen", cwd=project, env=env).returncode == 0
    # Without the plugin installed, sync says which package to install.
    proc = run_cli("sync", cwd=project)
    assert proc.returncode == 1 and "pip install acme-microtvm" in proc.stderr


def test_in_process_plugin_discovery(tmp_path, monkeypatch):
    site = make_plugin_site(tmp_path, module="acme_inproc", dist="acme-inproc")
    monkeypatch.syspath_prepend(str(site))
    from microtvm_registry.registry.plugins import plugin_indexes

    try:
        indexes = [i for i in plugin_indexes() if i.name == "acme-inproc"]
        names = sorted(t.name for i in indexes for t in i.templates)
        assert names == ["acme/blinky", "acme/called", "acme/nano"]
        assert all(not i.origin.trusted for i in indexes)
    finally:
        sys.modules.pop("acme_inproc", None)


def _python(code: str, env: dict):
    import subprocess

    full = dict(os.environ)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=60)
