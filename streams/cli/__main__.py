"""``python -m streams.cli``: the ``segstream`` command without the console script."""

from __future__ import annotations

from streams.cli import main

main()
