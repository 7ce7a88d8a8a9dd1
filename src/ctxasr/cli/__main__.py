"""``python -m ctxasr.cli``: the ``ctxasr`` command."""

from ctxasr.cli import main

main()
