"""Run kernels compiled by today's apache-tvm in a host project, driven through the Project API.

* :mod:`.mlf` -- export ``tvm.tirx.build(..., target="c")`` output to Model Library Format (with
  the TVM headers the C needs and the call information a template needs), and read it back;
* :mod:`.protocol` -- the framed, checksummed binary protocol of the host device program;
* :mod:`.session` -- ``Session``: upload numpy arrays, call functions, read results, time
  functions on the device's clock.

Nothing here imports tvm or numpy at import time.
"""
