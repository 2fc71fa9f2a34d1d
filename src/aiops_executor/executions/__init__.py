"""Executions: the run lifecycle, the persisted event log, live delivery over SSE, cancel and retention."""
