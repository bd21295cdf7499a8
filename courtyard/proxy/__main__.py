"""``python -m courtyard.proxy``: the same as the ``courtyard-proxy`` command."""

from .cli import main

main()
