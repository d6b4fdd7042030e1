"""microtvm_registry.project: option checking (unit) and a project's life against a real server."""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "project_api"))
from fault_servers import children_of, make_template  # noqa: E402

from microtvm_registry.errors import OptionError, ProjectError  # noqa: E402
from microtvm_registry.project import GeneratedProject, NotATemplateProjectError, OptionSpec, TemplateProject, TemplateProjectError, convert_option, fills_defaults, generate_project, prepare_options
from microtvm_registry.project_api import server  # noqa: E402


# -- options, no server ---------------------------------------------------------------------

def opt(name, **kw):
    base = {"name": name, "choices": None, "default": None, "type": "str", "required": None,
            "optional": ["build"], "help": ""}
    base.update(kw)
    return base


INFO = {
    "platform_name": "zephyr",
    "is_template": True,
    "project_options": [
        opt("verbose", type="bool", default=False),
        opt("board", required=["generate_project"], choices=["qemu_x86", "nrf5340dk"]),
        opt("workspace_size_bytes", type="int", default=2097152, optional=["generate_project"]),
        opt("ratio", type="float"),
        opt("compile_definitions"),
        opt("gdbserver_port", type="int"),
    ],
}


@pytest.mark.parametrize("text, value", [("false", False), ("0", False), ("No", False), ("off", False),
                                         ("true", True), ("1", True), ("YES", True), (True, True), (0, False)])
def test_bool_conversion(text, value):
    assert convert_option(OptionSpec("v", type="bool"), text) is value


@pytest.mark.parametrize("kind, text, value", [("int", "42", 42), ("int", "0x10", 16), ("int", 7, 7),
                                               ("float", "1.5", 1.5), ("float", 2, 2.0),
                                               ("str", "abc", "abc"), ("str", 5, "5"),
                                               ("list", "-DA=1 '-DB=x y'", ["-DA=1", "-DB=x y"])])
def test_typed_conversion(kind, text, value):
    assert convert_option(OptionSpec("o", type=kind), text) == value


@pytest.mark.parametrize("kind, text", [("bool", "maybe"), ("bool", 2), ("int", "4.5"), ("int", True),
                                        ("float", "fast"), ("int", "")])
def test_bad_values_name_option_value_and_type(kind, text):
    with pytest.raises(OptionError) as info:
        convert_option(OptionSpec("speed", type=kind), text)
    msg = str(info.value)
    assert "speed" in msg and repr(text) in msg and kind in msg


def test_v08_bool_choices_infer_type():
    spec = OptionSpec.from_json({"name": "verbose", "choices": [True, False], "help": ""})
    assert spec.effective_type == "bool" and not spec.has_default
    assert convert_option(spec, "no") is False


def test_unknown_option_suggests_closest():
    with pytest.raises(OptionError, match="unknown option 'verbos'.*did you mean 'verbose'"):
        prepare_options(INFO, {"verbos": "1"}, "build")


def test_choices_enforced():
    with pytest.raises(OptionError, match="board='stm32'.*qemu_x86, nrf5340dk"):
        prepare_options(INFO, {"board": "stm32"}, "generate_project")


def test_required_per_method():
    with pytest.raises(OptionError, match="option board is required for generate_project"):
        prepare_options(INFO, {}, "generate_project")
    prepare_options(INFO, {}, "build")  # not required there


def test_v12_filling_sends_every_declared_key_converted():
    sent = prepare_options(INFO, {"board": "qemu_x86", "verbose": "false", "workspace_size_bytes": "1024"},
                           "generate_project")
    assert sent == {"board": "qemu_x86", "verbose": False, "workspace_size_bytes": 1024, "ratio": None,
                    "compile_definitions": None, "gdbserver_port": None}
    assert list(sent)[:3] == ["board", "verbose", "workspace_size_bytes"]


def test_v08_servers_get_only_what_was_given():
    v08 = {"platform_name": "zephyr", "project_options": [
        {"name": "verbose", "choices": [True, False], "help": ""},
        {"name": "west_cmd", "choices": None, "help": ""},
    ]}
    assert not fills_defaults(v08)
    assert prepare_options(v08, {"verbose": "true"}, "build") == {"verbose": True}
    # The same options re-emitted by our server.py (seven keys, optional for every method).
    shimmed = {"project_options": [dict(o, default=None, type="str", required=None,
                                        optional=["generate_project", "build", "flash", "open_transport"])
                                   for o in v08["project_options"]]}
    assert not fills_defaults(shimmed)
    assert fills_defaults(INFO)


def test_tvm_type_quirks_are_fixed():
    arduino = {"platform_name": "arduino", "project_options": [opt("port", type="int")]}
    assert prepare_options(arduino, {"port": "/dev/ttyACM0"}, None) == {"port": "/dev/ttyACM0"}
    assert prepare_options(INFO, {"gdbserver_port": "1234"}, None) == {"gdbserver_port": "1234"}
    assert prepare_options(INFO, {"compile_definitions": "-DA=1 -DB"}, None) == {"compile_definitions": ["-DA=1", "-DB"]}
    with pytest.raises(OptionError, match="not a valid int"):
        prepare_options({"platform_name": "other", "project_options": [opt("port", type="int")]}, {"port": "/dev/x"}, None)


# -- a project's life against tests/project_api/fault_servers/template_server.py ---------------

@pytest.fixture
def mlf(tmp_path):
    path = tmp_path / "model.tar"
    with tarfile.open(path, "w") as tf:
        data = json.dumps({"version": 7, "modules": {}}).encode()
        info = tarfile.TarInfo("./metadata.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def template(tmp_path):
    return make_template(tmp_path / "template")


def calls(folder):
    return [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]


def test_generate_build_flash_transport(tmp_path, template, mlf):
    kids = children_of(os.getpid())
    with TemplateProject.from_directory(template, timeout=60) as tp:
        assert tp.info()["platform_name"] == "testplat" and tp.info()["is_template"] is True
        assert {o.name for o in tp.options} >= {"project_type", "verbose"}
        project = tp.generate_project(mlf, tmp_path / "new" / "proj", {"project_type": "aot", "verbose": "yes"})
    proj = tmp_path / "new" / "proj"
    with project:
        assert project.path == proj and project.info()["is_template"] is False
        assert project.model_library_format_path == str(proj / "model.tar")
        gen = calls(proj)[0]
        assert gen["cwd"] == str(template)  # the template's server ran in the template folder
        assert gen["model_library_format_path"] == str(mlf)
        # generated beside the target in a folder of this call's own, under the same name, then moved in
        staged = Path(gen["project_dir"])
        assert staged.name == proj.name and staged.parent.parent == proj.parent and not staged.parent.exists()
        assert gen["standalone_crt_entries"] == [] and not Path(gen["standalone_crt_dir"]).exists()
        assert gen["options"] == {"project_type": "aot", "verbose": True, "workspace_size_bytes": 2097152,
                                  "ratio": None, "fail_generate": False, "skip_copy": False, "copy_crt": False}

        project.build({"ratio": "0.5"})
        assert (proj / "build" / "firmware.txt").read_text() == "firmware"
        project.flash()
        assert (proj / "flashed.txt").exists()
        build, flash = calls(proj)[1:3]
        assert build["cwd"] == str(proj)
        assert build["options"]["ratio"] == 0.5 and build["options"]["verbose"] is True
        assert flash["options"]["ratio"] is None and flash["options"]["project_type"] == "aot"

        with project.transport() as t:
            assert t.timeouts == server.TransportTimeouts(1.5, 2.0, 0.0)
            t.write(b"hello\x00\xff", 1.0)
            assert t.read(4, 1.0) == b"hell"
            assert t.read(100, 1.0) == b"o\x00\xff"
            with pytest.raises(server.IoTimeoutError):
                t.read(1, 0)
        session = [c for c in calls(proj) if c["method"] in ("open_transport", "close_transport")]
        assert [c["method"] for c in session] == ["open_transport", "close_transport"]
        # One server per transport session: that process is gone, and the project starts anew.
        assert all(pid != session[0]["pid"] for pid, _ in children_of(os.getpid()))
        project.build()
        assert calls(proj)[-1]["method"] == "build"
    assert children_of(os.getpid()) == kids


def test_given_standalone_crt_is_sent(tmp_path, template, mlf):
    crt = tmp_path / "crt"
    (crt / "include").mkdir(parents=True)
    with generate_project(template, mlf, tmp_path / "p", {"project_type": "aot"}, standalone_crt_dir=crt) as p:
        gen = calls(p.path)[0]
    assert gen["standalone_crt_dir"] == str(crt) and gen["standalone_crt_entries"] == ["include"]


def test_template_that_needs_a_standalone_crt_says_so(tmp_path, template, mlf):
    with TemplateProject.from_directory(template) as tp:
        with pytest.raises(ProjectError, match="needs TVM's standalone CRT.*--standalone-crt DIR"):
            tp.generate_project(mlf, tmp_path / "p", {"project_type": "aot", "copy_crt": "true"})
        assert not (tmp_path / "p").exists()
        crt = tmp_path / "crt"
        (crt / "include").mkdir(parents=True)
        (crt / "include" / "crt.h").write_text("/* */\n")
        tp.generate_project(mlf, tmp_path / "p", {"project_type": "aot", "copy_crt": "true"},
                            standalone_crt_dir=crt).close()
    assert (tmp_path / "p" / "crt" / "include" / "crt.h").is_file()


def test_failed_generate_leaves_nothing(tmp_path, template, mlf):
    target = tmp_path / "a" / "b" / "proj"
    with TemplateProject.from_directory(template) as tp:
        with pytest.raises(server.ServerError, match="generate failed on purpose"):
            tp.generate_project(mlf, target, {"project_type": "aot", "fail_generate": "true"})
        assert not (tmp_path / "a").exists()
        with pytest.raises(ProjectError, match="cannot be used as a project.*removed it"):
            tp.generate_project(mlf, target, {"project_type": "aot", "skip_copy": "1"})
        assert not (tmp_path / "a").exists()
        # The template server is still usable after both failures.
        tp.generate_project(mlf, target, {"project_type": "aot"}).close()
    assert (target / "microtvm_api_server.py").exists()


def test_checks_before_calling(tmp_path, template, mlf):
    existing = tmp_path / "exists"
    existing.mkdir()
    with TemplateProject.from_directory(template) as tp:
        with pytest.raises(ProjectError, match="already exists"):
            tp.generate_project(mlf, existing, {"project_type": "aot"})
        with pytest.raises(OptionError, match="project_type is required for generate_project"):
            tp.generate_project(mlf, tmp_path / "p", {})
        with pytest.raises(OptionError, match="did you mean 'project_type'"):
            tp.generate_project(mlf, tmp_path / "p", {"project_typ": "aot"})
        with pytest.raises(ProjectError, match="does not exist"):
            tp.generate_project(tmp_path / "nope.tar", tmp_path / "p", {"project_type": "aot"})
    assert not (tmp_path / "p").exists()
    assert not (template / "calls.jsonl").exists()  # no call reached the server


def test_kind_checks(tmp_path, template, mlf):
    with pytest.raises(TemplateProjectError, match="is a template"):
        GeneratedProject.from_directory(template)
    generate_project(template, mlf, tmp_path / "p", {"project_type": "aot"}).close()
    with pytest.raises(NotATemplateProjectError, match="is a generated project"):
        TemplateProject.from_directory(tmp_path / "p")
    assert issubclass(NotATemplateProjectError, ProjectError)


def test_v08_style_template_gets_only_given_options(tmp_path, mlf):
    tpl = make_template(tmp_path / "t08", style="v08")
    with generate_project(tpl, mlf, tmp_path / "p", {"project_type": "aot"}) as p:
        p.build({"verbose": "true"})
        gen, build = calls(p.path)
    assert gen["options"] == {"project_type": "aot"}
    assert build["options"] == {"project_type": "aot", "verbose": True}


def test_with_the_server_helpers_echo_template(tmp_path, mlf):
    """Our project layer over our server library's reference template (tests/project_api/servers)."""
    import shutil

    echo = Path(__file__).resolve().parent / "project_api" / "servers" / "echo_server.py"
    tpl = tmp_path / "echo"
    tpl.mkdir()
    shutil.copy(echo, tpl / "microtvm_api_server.py")
    with generate_project(tpl, mlf, tmp_path / "p", {"project_type": "echo", "verbose": "1"}) as p:
        assert p.platform == "echo"
        p.build()
        built = json.loads((p.path / "build" / "options.json").read_text())
        assert built["verbose"] is True and built["workspace_size_bytes"] == 2097152
        with p.transport() as t:
            assert tuple(t.timeouts) == (2.0, 5.0, 5.0)
            t.write(bytes(range(256)), 1.0)
            got = b""
            while len(got) < 256:
                got += t.read(256 - len(got), 1.0)
            assert got == bytes(range(256))
