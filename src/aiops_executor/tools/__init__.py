"""The tool registry and the built-in, read-only diagnostic tools agents can call."""
