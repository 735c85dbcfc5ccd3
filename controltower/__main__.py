"""`python -m controltower` runs the CLI (the demo starts its children this way)."""

from controltower.cli import main

main()
