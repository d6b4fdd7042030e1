"""What every stage shares about a compiled model, below all of them: the Model Library Format's
data model (``mlf``: functions, arguments, loading and safe extraction), the static plan
(``plan``), element types (``dtypes``) and the C-safe names we derive (``names``). Plain data
and the standard library only: the device stage reads these without importing the compiler.
"""
