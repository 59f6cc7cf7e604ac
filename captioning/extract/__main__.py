"""``python -m captioning.extract``: see :mod:`captioning.extract.cli`."""

from captioning.extract.cli import main

main()
