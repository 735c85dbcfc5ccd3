"""Control Tower core: settings, database engine, schema, migrations and the canonical event.

This package is shared by every room (collectors, metrics, alerts, app) and imports none of
them; only the composition root (the `wiring` package: CLI, server, scheduler, demo)
wires rooms together.
"""

__version__ = "0.1.0"
