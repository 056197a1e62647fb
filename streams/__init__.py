"""The segstream worker: the Faust app, topics, tables, agents and web views.

The command line and the tooling around the worker (local broker, demo,
topic creation, export, tail) live in :mod:`streams.cli`.
"""
