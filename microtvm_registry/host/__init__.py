"""Where the host-template names lived before the package was split by stage; kept so existing
code keeps working.

``microtvm_registry.host.session``, ``.protocol`` and ``.mlf`` are the modules
:mod:`microtvm_registry.device.session`, :mod:`microtvm_registry.device.protocol` and
:mod:`microtvm_registry.compile.mlf` themselves (not copies), so patching or ``isinstance`` checks
see one object whichever name was used.
"""
