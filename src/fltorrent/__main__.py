"""``python -m fltorrent`` is the ``fltorrent`` command."""

from fltorrent.cli import main

main()
