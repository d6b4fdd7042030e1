"""The per-user cache of template folders (``store``) and which of them may run (``trust``).

Entries are named by content id (:mod:`microtvm_registry.contentid`) and filled by
:mod:`microtvm_registry.fetch`; nothing here resolves names.
"""
