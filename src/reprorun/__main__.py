"""``python -m reprorun``: the same as the ``reprorun`` command."""

from reprorun.cli import main

main()
