"""From a compiled model to what a template builds: Model Library Format (``mlf``) and the
element types it records (``dtypes``). Nothing here imports tvm at import time.
"""
