"""``microtvm run`` and ``microtvm demo`` as a user runs them: real subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

HANG_STOP = 300  # seconds; only stops a hang, never asserted on


def microtvm(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "microtvm_registry", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=HANG_STOP,
    )


@pytest.fixture(scope="module")
def built_project(host_template, kernels_mlf, tmp_path_factory):
    from microtvm_registry.project import generate_project

    proj = generate_project(host_template, kernels_mlf, tmp_path_factory.mktemp("cli") / "proj")
    proj.build()
    proj.close()
    return proj.path


@pytest.mark.needs_tvm
def test_run_reads_npy_inputs_and_writes_npy_outputs(built_project, tmp_path):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 16), dtype=np.float32)
    w = rng.standard_normal((8, 16), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    result = microtvm("run", str(built_project), "--input", f"x={tmp_path / 'x.npy'}", "--input",
                      f"w={tmp_path / 'w.npy'}", "--function", "dense", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    written = tmp_path / "out" / "y.npy"
    assert f"wrote {written} (float32, shape (4, 8))" in result.stdout
    np.testing.assert_allclose(np.load(written), x @ w.T, rtol=1e-5, atol=1e-5)


@pytest.mark.needs_tvm
def test_run_errors_are_one_line(built_project, tmp_path):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), np.float32))
    no_function = microtvm("run", str(built_project), "--input", f"x={tmp_path / 'bad.npy'}")
    assert no_function.returncode == 1
    assert "pick one with --function" in no_function.stderr
    bad_shape = microtvm("run", str(built_project), "-f", "dense", "--input", f"x={tmp_path / 'bad.npy'}",
                         "--input", f"w={tmp_path / 'bad.npy'}", "--output-dir", str(tmp_path / "out"))
    assert bad_shape.returncode == 1
    lines = bad_shape.stderr.strip().splitlines()
    assert lines[-1].startswith("microtvm: error: dense: argument x expects shape (4, 16) float32")
    assert not (tmp_path / "out").exists()
    malformed = microtvm("run", str(built_project), "--input", "no-equals-sign")
    assert malformed.returncode == 1 and "NAME=FILE.npy" in malformed.stderr


@pytest.mark.needs_tvm
def test_demo_compiles_runs_and_checks_against_numpy(tmp_path):
    pytest.importorskip("tvm")
    result = microtvm("demo", "--workdir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    kernels, tflite, network = result.stdout.strip().splitlines()[-3:]
    assert kernels.startswith("demo: dense+bias+relu on the host device vs numpy: max abs error") and kernels.endswith(": OK")
    assert tflite == "demo: int8 .tflite model on the host device vs TensorFlow Lite Micro: identical: OK"
    assert network.startswith("demo: keyword-spotting network on the host device vs onnxruntime: max abs error")
    assert network.endswith(": OK")
    for step in ("[1/8] compiling dense", "[2/8] generating, building", "[3/8] running the kernels",
                 "[4/8] compiling an int8 keyword-spotting model (kws.tflite", "[5/8] running it on host and comparing with TensorFlow Lite Micro",
                 "[6/8] compiling a keyword-spotting network", "[7/8] generating", "[8/8] running the whole network"):
        assert step in result.stderr
    assert (tmp_path / "demo" / "host-project" / "build" / "main").is_file()
    assert (tmp_path / "demo" / "host-tflite-project" / "build" / "main").is_file()
    assert (tmp_path / "demo" / "host-kws-project" / "build" / "main").is_file()
    again = microtvm("demo", "--workdir", str(tmp_path / "demo"))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_demo_without_apache_tvm_says_what_to_install(tmp_path):
    blocker = tmp_path / "blocker" / "tvm"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('apache-tvm hidden for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "blocker") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = microtvm("demo", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "microtvm: error: apache-tvm is not installed; pip install 'microtvm-registry[tvm]'"
    ]


@pytest.mark.needs_tvm
def test_failed_build_shows_the_compilers_last_lines(built_project, tmp_path):
    import shutil

    copy = tmp_path / "proj"
    shutil.copytree(built_project, copy, symlinks=True)
    shutil.rmtree(copy / "build", ignore_errors=True)
    result = microtvm("build", str(copy), "-o", "cc=clang-nope")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("microtvm: error: build of") and lines[0].endswith("the compiler's last lines:")
    tail = [l for l in lines[1:] if l.startswith("  | ")]
    assert tail and any("clang-nope" in l for l in tail), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.needs_tvm
def test_generated_project_folder_follows_the_umask(built_project):
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(built_project).st_mode) == 0o777 & ~umask  # mkdtemp's 0700 is not kept


@pytest.mark.needs_tvm
def test_run_json_stays_pure_when_the_server_and_its_launcher_print(built_project, tmp_path):
    """A project whose launcher and server both print to stdout: `run --json` still prints one
    JSON document on stdout, and their words reach stderr, marked as the server's."""
    import json
    import shutil

    np = pytest.importorskip("numpy")
    noisy = tmp_path / "noisy"
    shutil.copytree(built_project, noisy, symlinks=True)
    server = noisy / "microtvm_api_server.py"
    server.write_text(server.read_text() + '\nprint("server chatter on stdout", flush=True)\n')  # printed as it exits
    launcher = noisy / "launch_microtvm_api_server.sh"
    launcher.write_text(f'#!/bin/sh\necho "launcher chatter on stdout"\nexec {sys.executable} "$@"\n')
    launcher.chmod(0o755)
    np.save(tmp_path / "x.npy", np.ones((4, 16), np.float32))
    np.save(tmp_path / "w.npy", np.ones((8, 16), np.float32))
    result = microtvm("run", str(noisy), "-f", "dense", "-i", f"x={tmp_path / 'x.npy'}", "-i", f"w={tmp_path / 'w.npy'}",
                      "--output-dir", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)
    assert "[noisy server] launcher chatter on stdout" in result.stderr
    assert "[noisy server] server chatter on stdout" in result.stderr


@pytest.mark.needs_tvm
def test_concurrent_create_project_into_one_folder_leaves_the_winners_project(kernels_mlf, tmp_path):
    """Eight create-project runs into one folder: before, a loser's cleanup removed the winner's
    finished project (3 of 8 runs left none). Now each generates into a folder of its own and
    renames it into place: one wins, the others say the folder exists, and the project works."""
    target = tmp_path / "proj"
    runs = [subprocess.Popen([sys.executable, "-m", "microtvm_registry", "create-project", "host", str(target), "--mlf",
                              str(kernels_mlf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [(r.wait(timeout=HANG_STOP), r.communicate()[1]) for r in runs]
    assert sorted(code for code, _ in results) == [0] + [1] * 7, results
    assert all("already exists" in err for code, err in results if code == 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no staging folder left
    built = microtvm("build", str(target))
    assert built.returncode == 0, built.stderr


@pytest.mark.needs_tvm
def test_info_and_create_project_answer_without_build_tools_and_build_names_them(kernels_mlf, tmp_path):
    """Asking a template for its options or generating a project needs none of its build tools
    (as PlatformIO lists boards without toolchains): both answer and say what is missing; build
    then stops before the server runs, in one line naming the tool and how to get it."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))  # no make, no C compiler
    info = microtvm("info", "host", env=env)
    assert info.returncode == 0, info.stderr
    assert "platform: host" in info.stdout
    assert "host " in info.stderr and "needs `make`, `cc|gcc|clang` on PATH to build and flash, which are missing" in info.stderr
    made = microtvm("create-project", "host", str(tmp_path / "proj"), "--mlf", str(kernels_mlf), env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str((tmp_path / "proj").absolute()) and "which are missing" in made.stderr
    built = microtvm("build", str(tmp_path / "proj"), env=env)
    assert built.returncode == 1
    lines = built.stderr.strip().splitlines()
    assert len(lines) == 1 and "proj (from host@" in lines[0], built.stderr
    assert "needs `make`, `cc|gcc|clang` on PATH to build, which are missing: apt-get install make" in lines[0]
    assert not (tmp_path / "proj" / "build").exists()
    built = microtvm("build", str(tmp_path / "proj"))  # with the tools back, it builds
    assert built.returncode == 0, built.stderr


@pytest.mark.needs_tvm
@pytest.mark.parametrize("kind", ["npz", "zip", "truncated"])
def test_run_input_that_is_not_one_array_is_one_line(built_project, tmp_path, kind):
    """An .npz renamed .npy (or any zip) loaded as an archive and failed later; a cut-off .npy
    was a bare ValueError."""
    import zipfile

    np = pytest.importorskip("numpy")
    bad = tmp_path / "x.npy"
    if kind == "npz":
        np.savez(tmp_path / "x.npz", x=np.zeros((4, 16), np.float32), w=np.zeros((8, 16), np.float32))
        (tmp_path / "x.npz").rename(bad)
        words = "is a zip archive holding x, w, not one array (an .npz renamed .npy?)"
    elif kind == "zip":
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr("readme.txt", "hello")
        words = "is a zip archive holding readme.txt, not one array"
    else:
        np.save(bad, np.zeros((4, 16), np.float32))
        bad.write_bytes(bad.read_bytes()[:100])
        words = f"cannot read input x from {bad}"
    result = microtvm("run", str(built_project), "-f", "dense", "--input", f"x={bad}", "--input", f"w={bad}",
                      "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "numpy.save" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
