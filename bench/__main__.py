"""``python -m bench``: the same command as ``hubctl bench``."""

from bench.cli import main

main()
