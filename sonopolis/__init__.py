"""Composition root: the ``sonopolis`` CLI, the demo supervisor and local service launchers.

This package is the only place that knows both paths exist. It never mixes them in
one process: each side runs as its own ``sonopolis <command>`` process, started here.
"""
