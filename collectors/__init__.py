"""collectors room."""
