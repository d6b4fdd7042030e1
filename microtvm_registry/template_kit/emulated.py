"""Boards a template runs under an emulator (QEMU): proving a flashed image boots and answers,
and opening the running board's serial line as the project's transport. A board says which
emulator machine it is (``qemu.machine``); its family's emulator program comes from the target
data (microtvm_registry.targets).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from ..device import protocol
from ..device.qemu import QemuBoard, QemuError, install_signal_cleanup
from ..device.serial_transport import SerialPortError, SerialTransport
from ..project_api import server
from .project_files import TemplateKitError


def _board_qemu(board: Mapping[str, Any], image: Path, icount: bool) -> QemuBoard:
    from ..targets import family_of

    family = family_of(board["core"])
    emulator = family.emulator.tools[0] if family.emulator else None
    return QemuBoard(board["qemu"]["machine"], image, 0 if icount else None, board=board["name"], qemu=emulator)


def boot_check(board: Mapping[str, Any], image: Path, icount: bool, timeout_sec: float) -> float:
    """Starts the emulator on ``image``, asks the firmware hello, ends the emulator; seconds to
    the answer (TemplateKitError, with nothing flashed, when it does not answer)."""
    qemu = _board_qemu(board, image, icount)
    start = time.monotonic()
    try:
        pty = qemu.start()
    except QemuError as err:
        raise TemplateKitError(str(err)) from None
    try:
        link = SerialTransport(pty, alive=qemu.exit_reason)
        try:
            link.write(protocol.encode_frame(protocol.MSG_HELLO), 5)
            decoder = protocol.FrameDecoder()
            deadline = start + timeout_sec
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TemplateKitError(
                        f"the firmware did not answer on {board['name']} within {timeout_sec:g} s of QEMU starting; "
                        "QEMU was stopped and nothing was flashed"
                    )
                try:
                    frames = decoder.feed(link.read(4096, min(left, 1.0)))
                except server.IoTimeoutError:
                    continue
                except server.TransportClosedError as err:
                    raise TemplateKitError(f"{err or 'QEMU ended'} before the firmware answered; nothing was flashed") from None
                if frames:
                    if frames[0].type != protocol.REPLY_HELLO:
                        raise TemplateKitError(f"the firmware answered hello with message type 0x{frames[0].type:02x}")
                    return time.monotonic() - start
        finally:
            link.close()
    finally:
        qemu.close()


def open_emulated(board: Mapping[str, Any], image: Path, icount: bool) -> Tuple[SerialTransport, QemuBoard]:
    """The emulator running ``image`` and its UART as a transport; the caller closes both."""
    install_signal_cleanup()
    qemu = _board_qemu(board, image, icount)
    try:
        pty = qemu.start()
        return SerialTransport(pty, alive=qemu.exit_reason), qemu
    except (QemuError, SerialPortError) as err:
        qemu.close()
        raise TemplateKitError(str(err)) from None
    except BaseException:
        qemu.close()
        raise


def open_serial(port: str, board_name: Optional[str] = None) -> SerialTransport:
    """A real board's serial port (``auto``: the one connected device that can be ``board_name``)."""
    from ..errors import BoardError

    try:
        if port == "auto":
            from ..boards.discovery import pick_port

            port = pick_port(board_name or "")
        return SerialTransport(port)
    except (SerialPortError, BoardError) as err:
        raise TemplateKitError(str(err)) from None
