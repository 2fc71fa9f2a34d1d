"""The model runtime: stored LLM configuration in, working LangChain chat models out."""
