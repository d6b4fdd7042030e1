"""Tuning kernels on the device: schedule candidates measured by the board's own counter, kept as
records that ``microtvm compile --records`` applies."""
