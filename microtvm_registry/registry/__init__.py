"""What a template name means and where its files come from: indexes, plugins, specs, the lockfile.

Floors inside, lowest first (each module imports only from floors below it):

- ``models`` (templates, versions, origins), ``sources`` (the exact sources a version pins),
  ``index_format`` (one index document -> models), ``lockfile`` (the ``microtvm.lock`` format);
- ``packaged_indexes``, ``extra_indexes``, ``plugins`` (where indexes come from), ``catalog``
  (all of them merged), ``resolve`` (spec + lockfile -> one version).

Nothing here fetches template files or touches the cache: that is :mod:`microtvm_registry.fetch`
and :mod:`microtvm_registry.cache`, which build on this package.
"""
