"""Control Tower core: settings, database engine, schema, migrations and the canonical event.

This package is shared by every room (collectors, metrics, alerts, app) and imports none of
them; only the composition roots (`controltower.cli`, `controltower.server`, `controltower.demo`)
wire rooms together.
"""

__version__ = "0.1.0"
