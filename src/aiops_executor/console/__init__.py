"""Terminal front-end of the engine: ``aiops-executor run TEAM_FILE --task ...``.

``team_file`` reads and checks what the user gave (team file, context, output schema), ``view`` renders a
run live and its result with rich, ``runner`` ties them to the application context and the engine. The
engine itself knows nothing of terminals.
"""
