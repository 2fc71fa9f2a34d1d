"""MCP tool servers: their registration (``/tool-servers``), the process's pool of connections to them, and
the tools they lend to agents as ``<server_name>.<tool_name>``."""
