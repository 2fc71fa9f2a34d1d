"""Every private interface of LangGraph and LangChain the service relies on, each with the reason, in one package.

None of them is documented, so an upgrade may change any of them without notice: pyproject.toml bounds the
packages below their next major version, and tests/core/test_private_apis.py fails when one of these changes shape
(a name, a signature, a table's columns, how the saver issues its writes). Code elsewhere reaches them only
through this package; the two overrides of private hooks (items 2 and 4) say so where they are written.

1. ``CONFIG_KEY_DURABILITY`` (``langgraph._internal._constants``): the configurable key through which a graph
   hands its durability mode to the graphs invoked inside its nodes. The engine's agent graphs run inside a node
   of the run's graph without a checkpointer; inheriting the run's "sync" they would wait for checkpoints they
   never write, so the engine gives them "exit" (engine/team.py).
2. ``BaseChatModel._should_stream``: LangChain's rule for whether a call streams (a callback wants tokens). The
   failover model asks it, then overrides the hook so that only ``astream()`` streams through LangChain; every
   other call streams from the provider inside ``_agenerate`` (llm/runtime/failover.py).
3. ``BaseChatModel._agenerate`` and ``_astream`` of a provider's client: the failover model calls the route's
   client below LangChain's callback layer, so one logical call reports its callbacks (and tokens) once,
   whichever route answered, and a stream broken mid-way is retried on the next route without garbling it.
4. ``AsyncPostgresSaver._cursor(pipeline=True)``: the cursor the PostgreSQL saver issues every write on. The
   group-commit saver overrides it to record the statements and commit them with other saves in one
   transaction (executions/checkpoints.py).
5. ``AsyncSqliteSaver``'s tables and columns (``SQLITE_SAVER_COLUMNS``), its ``conn`` and ``lock``: the
   group-commit saver writes the rows that saver would write, in one transaction per batch.

The package is split by what each part imports, so that a command that never calls a model (``migrate``, ``users``,
``purge``) does not load LangChain's chat models and LangSmith (a second of start-up): ``graphs`` (item 1),
``chat_models`` (items 2 and 3), ``savers`` (items 4 and 5, and the PostgreSQL saver's tables).
"""
