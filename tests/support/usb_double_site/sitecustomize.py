"""Installs the UsbDouble (tests/support/usb_double.py) in a subprocess when
MICROTVM_TEST_USB_DOUBLE names a scenario file."""
import os
import sys

if os.environ.get("MICROTVM_TEST_USB_DOUBLE"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import usb_double

    usb_double.install_from_env()
    sys.path.pop(0)
