"""What talks to a running device: the framed binary ``protocol`` and the ``session`` that uploads
tensors, calls kernels, reads results and times calls on the device's own clock.
"""
