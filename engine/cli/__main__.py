"""``python -m engine.cli``: the same command as ``warn-dispatch``."""

from engine.cli import main

main()
