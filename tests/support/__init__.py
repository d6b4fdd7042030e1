"""Shared test infrastructure (pytest-independent): real local servers and git repo builders.

Import as ``from support.servers import GitDaemon, HttpServer, TcpProxy, make_repo`` -- pytest
puts ``tests/`` on sys.path because ``tests/conftest.py`` lives there; benchmarks add it by hand.
See :mod:`support.servers` for the interface.
"""
