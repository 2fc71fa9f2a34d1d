"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

import structlog
from fastapi import APIRouter, Depends, FastAPI

from aiops_executor import __version__
from aiops_executor.audit.endpoints import router as audit_router
from aiops_executor.auth import service as auth_service
from aiops_executor.auth.endpoints import router as auth_router
from aiops_executor.core import egress, liveness
from aiops_executor.core.files import secure_data_files
from aiops_executor.core.health import router as health_router
from aiops_executor.core.http_errors import install_error_handlers
from aiops_executor.core.http_telemetry import TelemetryMiddleware
from aiops_executor.core.http_telemetry import router as metrics_router
from aiops_executor.core.logging import configure_logging
from aiops_executor.core.migrate import upgrade_engine
from aiops_executor.core.openapi import install_openapi_documentation
from aiops_executor.core.request_context import RequestContextMiddleware
from aiops_executor.core.request_limits import BodySizeLimitMiddleware, check_json_body
from aiops_executor.core.settings import Settings, get_settings
from aiops_executor.core.telemetry import Telemetry
from aiops_executor.executions.endpoints import router as executions_router
from aiops_executor.imports.endpoints import router as imports_router
from aiops_executor.llm import service as llm_service
from aiops_executor.llm.endpoints import router as llm_router
from aiops_executor.services import ServiceContext
from aiops_executor.spend.endpoints import router as spend_router
from aiops_executor.teams.endpoints import router as teams_router
from aiops_executor.tool_servers.endpoints import router as tool_servers_router
from aiops_executor.tools.endpoints import router as tools_router
from aiops_executor.triggers.endpoints import router as triggers_router
from aiops_executor.webconsole.endpoints import router as console_router

API_PREFIX = "/api/v1"
# Every /api/v1 router, in one place so the policy test can walk all of their routes.
API_ROUTERS: tuple[APIRouter, ...] = (
    auth_router,
    llm_router,
    teams_router,
    executions_router,
    tools_router,
    tool_servers_router,
    audit_router,
    triggers_router,
    imports_router,
    spend_router,
)
# One tag per domain; a router's ``tags=[...]`` must name one of these (tests/service/test_openapi.py checks it).
OPENAPI_TAGS: list[dict[str, str]] = [
    {"name": "auth", "description": "Sign-in, users and API keys. Roles: admin > operator > viewer."},
    {"name": "llm", "description": "LLM providers with their endpoints, credentials and models; export/import."},
    {"name": "teams", "description": "Agent Teams built from resource topologies."},
    {"name": "executions", "description": "Runs of a team: start, stream, follow, cancel, structured output."},
    {"name": "spend", "description": "Budgets per team, API key, provider or everything; usage reports."},
    {"name": "tools", "description": "The catalogue of diagnostic tools agents can use."},
    {"name": "tool-servers", "description": "MCP servers whose tools agents can use (admin-registered)."},
    {"name": "triggers", "description": "Webhooks that start investigations (Prometheus Alertmanager)."},
    {"name": "imports", "description": "Topologies built from what a system already describes (Kubernetes)."},
    {"name": "audit", "description": "Who changed what."},
    {"name": "health", "description": "Liveness and readiness (open)."},
]
logger = structlog.get_logger(__name__)


async def start_context(settings: Settings, telemetry: Telemetry | None = None) -> ServiceContext:
    """Everything a process needs before it serves: keys, schema (embedded default), first admin."""
    egress.configure(settings)  # the provider clients' egress policy
    tightened = secure_data_files(settings.data_dir, settings.embedded_database_path)
    if tightened:
        logger.warning("made data files readable by their owner only", paths=tightened)
    context = ServiceContext.build(settings, telemetry)
    await context.open()
    for path in context.secrets.generated:
        logger.warning("generated a development secret; keep it safe or set it in the environment", path=path)
    if settings.is_embedded_database:
        await upgrade_engine(context.database.engine)
    if settings.seed_simulator:
        async with context.database.sessionmaker() as session:
            if await llm_service.seed_simulator(session, context):
                logger.info("registered the offline simulator provider", provider=llm_service.SIMULATOR_PROVIDER)
    async with context.database.sessionmaker() as session:
        if await auth_service.ensure_bootstrap_admin(session, settings):
            logger.info("created the bootstrap admin", username=settings.admin_username)
        elif not settings.is_prod and not settings.admin_username:
            password_file = await auth_service.ensure_dev_admin(session, settings)
            if password_file is not None:
                logger.warning("created user 'admin'; its password is in the data dir", path=str(password_file))
    return context


@cache
def api_router() -> APIRouter:
    """Every /api/v1 route, gathered once per process: FastAPI analyses each route again whenever a router is
    included, which took most of the time of making an app (one per test)."""
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(check_json_body)])
    for router in API_ROUTERS:
        api.include_router(router)
    return api


def create_app(settings: Settings | None = None, *, telemetry: Telemetry | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    telemetry = telemetry or Telemetry.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = await start_context(settings, telemetry)
        app.state.context = context
        telemetry.metrics.watch(
            active_executions=context.executions.running_count,
            sse_subscribers=context.executions.broadcaster.subscriber_count,
        )
        await context.executions.start()
        watcher = asyncio.create_task(context.liveness.run(), name="liveness")
        try:
            yield
        finally:
            await liveness.stop(watcher)
            await context.executions.stop()
            await context.close()

    app = FastAPI(
        title="aiops-agent-executor",
        version=__version__,
        description="Builds LLM agent teams from resource topologies and runs them on LangGraph. Every error "
        "answer has the body `ErrorResponse`; each operation lists its error codes (also as `x-error-codes`).",
        lifespan=lifespan,
        openapi_tags=OPENAPI_TAGS,
        # One schema per model: the -Input/-Output pairs FastAPI makes otherwise trip client generators.
        separate_input_output_schemas=False,
    )
    app.state.telemetry = telemetry
    install_error_handlers(app)
    install_openapi_documentation(app)
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(api_router())
    app.include_router(console_router)
    # Innermost: a refused body is still measured and carries X-Request-ID.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_request_body_bytes)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)  # inside the request-id middleware
    app.add_middleware(RequestContextMiddleware)
    return app
