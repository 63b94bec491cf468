"""``python -m signalloop`` runs the command line."""

from signalloop.cli import main

main()
