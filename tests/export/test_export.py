"""`microtvm export MODEL_TAR --format cmake|platformio|arduino -o DIR`: the CMake export, built
with CMake and arm-none-eabi-gcc into a small program of this test's own (its own vector table
and linker script, semihosting for output: none of our template's code), runs on the emulated
mps2-an386 and prints TFLite Micro's answer bit for bit, CMSIS-NN included from the verified
cache; the PlatformIO and Arduino exports are checked against their documented manifests (their
build tools download toolchains, which this machine cannot)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from registry_support import run_cli
from support import tflite_models as tm

pytestmark = pytest.mark.needs_tvm

MAIN_C = r"""
#include <stdint.h>
#include <stdio.h>
#include "@MODEL@_model.h"

extern uint32_t __bss_start__, __bss_end__, __stack_top__;
int main(void);

/* Arm semihosting: QEMU prints SYS_WRITE0's text and ends on SYS_EXIT. */
static void semihost(int op, const void* arg) {
  register int r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
}

void reset_handler(void) {
  for (uint32_t* p = &__bss_start__; p < &__bss_end__; ++p) *p = 0;
  main();
  semihost(0x18, (const void*)0x20026); /* SYS_EXIT, application exit */
  for (;;) {}
}

__attribute__((section(".vectors"), used)) const void* const vectors[2] = {&__stack_top__, (const void*)reset_handler};

@INPUTS@

static void print_hex(const char* name, const uint8_t* data, unsigned n) {
  static char line[8192];
  int used = snprintf(line, sizeof(line), "%s ", name);
  for (unsigned i = 0; i < n && used < (int)sizeof(line) - 3; ++i) used += snprintf(line + used, sizeof(line) - used, "%02x", data[i]);
  line[used++] = '\n';
  line[used] = 0;
  semihost(0x04, line);
}

int main(void) {
@RUN@
  return 0;
}
"""

LINKER = """
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M }
SECTIONS {
  .vectors : { KEEP(*(.vectors)) } > FLASH
  .text : { *(.text*) *(.rodata*) } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  .data : { *(.data*) } > RAM
  .bss (NOLOAD) : { __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end__ = .; } > RAM
  end = .;
  __stack_top__ = ORIGIN(RAM) + LENGTH(RAM);
}
"""

APP_CMAKE = """
cmake_minimum_required(VERSION 3.13)
project(app C)
add_subdirectory(@EXPORT@ model)
add_executable(app main.c)
target_link_libraries(app PRIVATE @MODEL@)
target_link_options(app PRIVATE -nostartfiles -T${CMAKE_CURRENT_SOURCE_DIR}/app.ld --specs=nano.specs --specs=nosys.specs)
"""

FLAGS = "-mcpu=cortex-m4 -mthumb -mfloat-abi=soft -O2 -ffunction-sections -fdata-sections"


def _c_bytes(name: str, array: np.ndarray) -> str:
    data = array.tobytes()
    return f"static const uint8_t {name}[{len(data)}] = {{{', '.join(str(b) for b in data)}}};"


@pytest.fixture
def compiled(cmsis_nn, tmp_path):
    model = tm.library_net(tmp_path / "library_net.tflite")
    out = run_cli("compile", str(model), "--target", "cortex-m4", "--kernels", "cmsis-nn", "-o", str(tmp_path / "m.tar"), "--json")
    assert out.returncode == 0, out.stderr
    return model, tmp_path / "m.tar", json.loads(out.stdout)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (CI installs it: .ci/run)")
def test_the_cmake_export_runs_in_a_program_of_our_own_on_the_board(compiled, tmp_path):
    model, mlf, summary = compiled
    out = run_cli("export", str(mlf), "--format", "cmake", "-o", str(tmp_path / "exported"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("exported library_net (cortex-m4) as a cmake library into") and "arm/cmsis-nn" in out.stdout
    exported = tmp_path / "exported"
    assert (exported / "LICENSES" / "arm_cmsis-nn.txt").is_file()
    name = "library_net"

    inputs = tm.random_inputs(model, 5)
    want = tm.tflm_reference(model, inputs, tmp_path / "ref")
    decls, run = [], []
    for fact, array in zip(summary["inputs"], inputs):
        decls.append(_c_bytes(f"in_{fact['c_name']}", array))
    for fact in summary["outputs"]:
        decls.append(f"static uint8_t out_{fact['c_name']}[{name.upper()}_OUTPUT_{fact['c_name'].upper()}_BYTES];")
    run.append("  const void* inputs[] = {" + ", ".join(f"in_{f['c_name']}" for f in summary["inputs"]) + "};")
    run.append("  void* outputs[] = {" + ", ".join(f"out_{f['c_name']}" for f in summary["outputs"]) + "};")
    run.append(f"  if ({name}_run(inputs, outputs) != 0) semihost(0x04, \"run failed\\n\");")
    for fact in summary["outputs"]:
        run.append(f"  print_hex(\"{fact['c_name']}\", out_{fact['c_name']}, sizeof(out_{fact['c_name']}));")
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.c").write_text(MAIN_C.replace("@MODEL@", name).replace("@INPUTS@", "\n".join(decls)).replace("@RUN@", "\n".join(run)))
    (app / "app.ld").write_text(LINKER)
    (app / "CMakeLists.txt").write_text(APP_CMAKE.replace("@EXPORT@", str(exported)).replace("@MODEL@", name))
    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", str(app), "-B", str(build), "-DCMAKE_SYSTEM_NAME=Generic", "-DCMAKE_C_COMPILER=arm-none-eabi-gcc",
         "-DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY", f"-DCMAKE_C_FLAGS={FLAGS}"],
        capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    made = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    ran = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
                          "-semihosting-config", "enable=on,target=native", "-kernel", str(build / "app")],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # QEMU writes the semihosting console to its stderr
    printed = dict(line.split(" ", 1) for line in ran.stderr.splitlines() if " " in line)
    for fact, expected in zip(summary["outputs"], want):
        got = np.frombuffer(bytes.fromhex(printed[fact["c_name"]]), expected.dtype).reshape(expected.shape)
        assert np.array_equal(got, expected), fact["c_name"]


@pytest.mark.parametrize("fmt", ["platformio", "arduino"])
def test_the_platformio_and_arduino_exports_follow_their_manifests(compiled, tmp_path, fmt):
    _model, mlf, _summary = compiled
    out = run_cli("export", str(mlf), "--format", fmt, "-o", str(tmp_path / fmt), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    root = tmp_path / fmt
    assert [lib["name"] for lib in result["libraries"]] == ["arm/cmsis-nn"]
    assert all((root / s).is_file() and s.startswith("src/") for s in result["sources"])
    assert (root / "src" / "library_net_model.h").is_file() and (root / "src" / "arm_nnfunctions.h").is_file()
    if fmt == "platformio":
        # library.json: name and version required; build.srcDir / includeDir say where the sources are
        manifest = json.loads((root / "library.json").read_text())
        assert manifest["name"] == "library_net" and manifest["version"] == "1.0.0"
        assert manifest["build"]["srcDir"] == "src" and manifest["build"]["includeDir"] == "src"
        assert (root / "examples" / "example.c").is_file()
    else:
        # library.properties: the 1.5 format's required fields; sources under src/, examples as sketches
        fields = dict(line.split("=", 1) for line in (root / "library.properties").read_text().splitlines() if "=" in line)
        for key in ("name", "version", "author", "maintainer", "sentence", "paragraph", "category", "url", "architectures"):
            assert fields.get(key), key
        assert fields["category"] in {"Display", "Communication", "Signal Input/Output", "Sensors", "Device Control", "Timing",
                                      "Data Storage", "Data Processing", "Other"}
        assert fields["includes"] == "library_net_model.h"
        sketch = root / "examples" / "library_net_example" / "library_net_example.ino"
        assert "void setup()" in sketch.read_text() and "library_net_run(inputs, outputs)" in sketch.read_text()


def test_export_errors_are_one_line_and_leave_nothing(compiled, tmp_path):
    _model, mlf, _summary = compiled
    (tmp_path / "taken").mkdir()
    out = run_cli("export", str(mlf), "--format", "cmake", "-o", str(tmp_path / "taken"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "already exists" in out.stderr
    out = run_cli("export", str(tmp_path / "missing.tar"), "--format", "cmake", "-o", str(tmp_path / "x"))
    assert out.returncode == 1 and "does not exist" in out.stderr and not (tmp_path / "x").exists()
    out = run_cli("--offline", "export", str(mlf), "--format", "cmake", "-o", str(tmp_path / "y"),
                  env={"MICROTVM_REGISTRY_CACHE": str(tmp_path / "empty-cache")})
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "arm/cmsis-nn" in out.stderr
    assert not (tmp_path / "y").exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".y.")] == []
