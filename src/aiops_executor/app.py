"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from aiops_executor import __version__
from aiops_executor.audit.endpoints import router as audit_router
from aiops_executor.auth import service as auth_service
from aiops_executor.auth.endpoints import router as auth_router
from aiops_executor.core.context import AppContext
from aiops_executor.core.deps import ContextDep
from aiops_executor.core.errors import error_response, install_error_handlers
from aiops_executor.core.logging import configure_logging
from aiops_executor.core.migrate import upgrade_engine
from aiops_executor.core.request_context import RequestContextMiddleware
from aiops_executor.core.settings import Settings, get_settings
from aiops_executor.executions.endpoints import router as executions_router
from aiops_executor.llm import service as llm_service
from aiops_executor.llm.endpoints import router as llm_router
from aiops_executor.teams.endpoints import router as teams_router
from aiops_executor.tools.endpoints import router as tools_router

API_PREFIX = "/api/v1"
# Every /api/v1 router, in one place so the policy test can walk all of their routes.
API_ROUTERS: tuple[APIRouter, ...] = (
    auth_router,
    llm_router,
    teams_router,
    executions_router,
    tools_router,
    audit_router,
)
logger = structlog.get_logger(__name__)


async def start_context(settings: Settings) -> AppContext:
    """Everything a process needs before it serves: keys, schema (embedded default), first admin."""
    context = AppContext.build(settings)
    for path in context.secrets.generated:
        logger.warning("generated a development secret; keep it safe or set it in the environment", path=path)
    if settings.is_embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade_engine(context.database.engine)
    if settings.seeds_simulator:
        async with context.database.sessionmaker() as session:
            if await llm_service.seed_simulator(session, context):
                logger.info("registered the offline simulator provider", provider=llm_service.SIMULATOR_PROVIDER)
    async with context.database.sessionmaker() as session:
        if await auth_service.ensure_bootstrap_admin(session, settings.admin_username, settings.admin_password):
            logger.info("created the bootstrap admin", username=settings.admin_username)
        elif not settings.is_prod and not settings.admin_username:
            password_file = await auth_service.ensure_dev_admin(session, settings.data_dir)
            if password_file is not None:
                logger.warning("created user 'admin'; its password is in the data dir", path=str(password_file))
    return context


health_router = APIRouter(tags=["health"])


@health_router.get("/health")
async def liveness() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@health_router.get("/health/ready")
async def readiness(context: ContextDep) -> JSONResponse:
    try:
        async with context.database.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        logger.warning("database not reachable", error=type(exc).__name__)
        return error_response(
            503, "SERVICE_UNAVAILABLE", "database is not reachable", {"checks": {"database": "unreachable"}}
        )
    return JSONResponse({"status": "ok", "checks": {"database": "ok"}})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = await start_context(settings)
        app.state.context = context
        await context.executions.start()
        try:
            yield
        finally:
            await context.executions.stop()
            await context.close()

    app = FastAPI(
        title="aiops-agent-executor",
        version=__version__,
        description="Builds LLM agent teams from resource topologies and runs them on LangGraph.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health_router)
    api = APIRouter(prefix=API_PREFIX)
    for router in API_ROUTERS:
        api.include_router(router)
    app.include_router(api)
    app.add_middleware(RequestContextMiddleware)
    return app
