"""`python -m credence` runs the CLI."""

from .cli import main

main()
