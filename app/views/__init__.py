"""app/views room."""
