"""The ``segstream`` command line and the tooling around the worker.

Nothing here runs inside a worker: the worker runtime is the rest of
``streams/``, and these modules only start, feed, inspect or set up one.

- :mod:`streams.cli.commands`: the typer commands (``segstream --help``).
- :mod:`streams.cli.admin`: topic creation (``segstream topics create``, the
  Kubernetes init container, docker compose's topic creator).
- :mod:`streams.cli.local_kafka`: a local single-node broker (``segstream kafka``).
- :mod:`streams.cli.process`: a worker as a child process (demo, tests, benchmarks).
- :mod:`streams.cli.demo`: ``segstream demo``.
- :mod:`streams.cli.export`: ``segstream export`` (profiles as CSV or JSON Lines).
- :mod:`streams.cli.tail`: one line per segment change or trigger (``segstream tail``).
- :mod:`streams.cli.config_reference`: generates ``docs/configuration.md``.

Importing this package loads none of them, so ``import streams.cli.process``
does not pull in typer, rich or the worker.
"""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``segstream`` console script."""
    from streams.cli.commands import cli

    cli()
