"""`microtvm boards` and `microtvm devices` through the real CLI in subprocesses; hardware is the
UsbDouble (tests/support/usb_double.py), installed in the subprocess where pyserial and pyusb
report devices."""
from __future__ import annotations

import json


from registry_support import run_cli
from support.usb_double import SCENARIOS, environment


def devices(tmp_path, scenario, *args):
    return run_cli("devices", *args, env=environment(SCENARIOS[scenario], tmp_path))


def test_boards_table_and_filters():
    out = run_cli("boards")
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header == ["BOARD", "VENDOR", "CORE", "FPU", "FLASH", "RAM", "CLOCK", "KIND", "TEMPLATES"]
    l4r5 = next(line for line in out.stdout.splitlines() if line.startswith("nucleo_l4r5zi "))
    assert "cortex-m4" in l4r5 and "2 MiB" in l4r5 and "640 KiB" in l4r5 and "120 MHz" in l4r5
    assert l4r5.rstrip().endswith("cortex-m, apache-tvm/zephyr")
    out = run_cli("boards", "--template", "cortex-m", "--emulated", "--json")
    assert out.returncode == 0, out.stderr
    assert [b["name"] for b in json.loads(out.stdout)] == ["mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547"]
    out = run_cli("boards", "--core", "cortex-m55", "--json")
    m55 = json.loads(out.stdout)
    assert [b["name"] for b in m55] == ["mps3-an547"] and m55[0]["aliases"] == ["mps3_an547"]
    assert {t["use"] for t in m55[0]["templates"]} == {"cortex-m -o board=mps3-an547", "apache-tvm/zephyr@0.18.0 -o board=mps3_an547"}
    out = run_cli("boards", "--core", "cortex-m99")
    assert out.returncode == 0 and out.stdout == "" and "no board matches" in out.stderr


def test_devices_with_nothing_plugged_in(tmp_path):
    out = devices(tmp_path, "nothing")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no boards found: none plugged in (serial adapters, debug probes) and no emulated board running")
    assert "microtvm boards --emulated" in out.stdout
    assert json.loads(devices(tmp_path, "nothing", "--json").stdout) == []


def test_devices_shows_a_nucleo_as_its_candidates(tmp_path):
    out = devices(tmp_path, "one_nucleo_l4r5zi")
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[2]
    assert row.startswith("/dev/ttyACM0") and "0483:374b" in row and "ST-LINK/V2-1" in row
    assert row.rstrip().endswith("one of: nucleo_f746zg, nucleo_l4r5zi, stm32f746g_disco")
    listed = json.loads(devices(tmp_path, "one_nucleo_l4r5zi", "--json").stdout)
    assert [(d["port"], d["status"], d["probe"]) for d in listed] == [("/dev/ttyACM0", "ambiguous", "ST-LINK/V2-1")]


def test_devices_two_stlinks_cmsis_dap_ftdi_and_unreadable(tmp_path):
    two = json.loads(devices(tmp_path, "two_stlinks", "--json").stdout)
    assert [d["port"] for d in two] == ["/dev/ttyACM0", "/dev/ttyACM1"] and {d["status"] for d in two} == {"ambiguous"}
    dap = json.loads(devices(tmp_path, "cmsis_dap", "--json").stdout)
    assert [(d["kind"], d["port"], d["probe"]) for d in dap] == [("probe", None, "CMSIS-DAP probe")]
    text = devices(tmp_path, "cmsis_dap").stdout
    assert "USB c251:f001" not in text and "CMSIS-DAP probe" in text  # the table names the probe
    ftdi = devices(tmp_path, "ftdi")
    assert "/dev/ttyUSB0" in ftdi.stdout and "unknown board" in ftdi.stdout
    unreadable = devices(tmp_path, "unreadable")
    assert unreadable.returncode == 0, unreadable.stderr
    assert "1366:0101: USB strings unreadable (permission denied?)" in unreadable.stdout


def test_devices_without_libusb_lists_serial_ports_and_says_why_once(tmp_path):
    out = devices(tmp_path, "no_backend")
    assert out.returncode == 0, out.stderr
    assert "/dev/ttyACM0" in out.stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("microtvm: debug probes without a serial port are not listed")
    out = devices(tmp_path, "no_backend", "--json")
    assert [d["port"] for d in json.loads(out.stdout)] == ["/dev/ttyACM0"]  # stdout stays pure JSON


ARDUINO_LIKE_SERVER = '''
"""A generated project shaped like TVM's arduino template: options board and port (a serial port,
no "auto" of its own); flash records the options it was given."""
import json
from pathlib import Path

from microtvm_registry.project_api import server

HERE = Path(__file__).resolve().parent


class Handler(server.ProjectAPIHandler):
    def server_info_query(self, tvm_version):
        return server.ServerInfo(platform_name="arduino", is_template=False,
                                 model_library_format_path=str(HERE / "model.tar"), project_options=[
            server.ProjectOption("board", type="str", optional=["flash", "open_transport"], help="the board"),
            server.ProjectOption("port", type="str", optional=["flash", "open_transport"], help="a serial port"),
        ])

    def generate_project(self, *args):
        raise server.ServerError("not a template")

    def build(self, options):
        pass

    def flash(self, options):
        (HERE / "flashed.json").write_text(json.dumps(options))

    def open_transport(self, options):
        raise server.ServerError("no board here")

    def close_transport(self):
        pass

    def read_transport(self, n, timeout_sec):
        raise server.TransportClosedError()

    def write_transport(self, data, timeout_sec):
        raise server.TransportClosedError()


if __name__ == "__main__":
    server.main(Handler())
'''


def test_port_auto_for_a_template_that_has_no_auto_of_its_own(tmp_path):
    project = tmp_path / "arduino-project"
    project.mkdir()
    (project / "microtvm_api_server.py").write_text(ARDUINO_LIKE_SERVER)
    env = environment(SCENARIOS["nano33ble"], tmp_path)
    out = run_cli("flash", str(project), "-o", "board=nano33ble", "-o", "port=auto", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads((project / "flashed.json").read_text())["port"] == "/dev/ttyACM0"
    out = run_cli("flash", str(project), "-o", "port=auto", env=env)
    assert out.returncode == 1 and out.stderr.strip() == (
        "microtvm: error: -o port=auto needs the board to look for: add -o board=NAME (as `microtvm boards` names it)"
    )
    out = run_cli("flash", str(project), "-o", "board=due", "-o", "port=auto", env=env)
    assert out.returncode == 1
    assert "port=auto: no connected device can be due (2341:003d); found: /dev/ttyACM0 (2341:805a)" in out.stderr
