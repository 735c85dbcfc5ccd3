"""`python -m wiring` runs the CLI (the demo starts its children this way)."""

from wiring.cli import main

main()
