"""aiops-agent-executor: builds LLM agent teams from resource topologies and runs them."""

__version__ = "0.1.0"
