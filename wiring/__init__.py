"""The processes' wiring (composition root): the CLI, the collector's ASGI app, the scheduler
and the demo. It sits above the rooms and the core, imports them, and nothing imports it.
"""
