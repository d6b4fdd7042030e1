"""The old name of :mod:`microtvm_registry.compile.mlf` (see :mod:`microtvm_registry.host`)."""
import importlib
import sys

sys.modules[__name__] = importlib.import_module("microtvm_registry.compile.mlf")
