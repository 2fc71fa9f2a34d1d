"""The incident lab's ``shop``: a small web service that depends on PostgreSQL and Redis, exporting Prometheus
metrics -- the application whose faults the lab injects and its team investigates.

``GET /checkout`` puts an item in a Redis cart and writes an order to PostgreSQL (a new connection per request,
so that a server with no connection left, a held lock or a slow network shows in the request); ``GET /health``
checks both; ``GET /metrics`` is Prometheus' text format. Failures answer 500 with what failed in the body.

Run: ``python -m aiops_executor.lab.shop --port P --postgres-dsn DSN --redis-url URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Each dependency gets this long before the request gives up on it.
REDIS_TIMEOUT_SECONDS = 2.0
POSTGRES_CONNECT_SECONDS = 3.0
POSTGRES_STATEMENT_SECONDS = 15.0
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SCHEMA = "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, item text NOT NULL, at timestamptz)"


class DependencyFailed(Exception):
    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency}: {reason}")
        self.dependency = dependency


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


class Shop:
    def __init__(self, postgres_dsn: str, redis_url: str) -> None:
        self.postgres_dsn = postgres_dsn
        self.redis = Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self.metrics = CollectorRegistry()
        self.requests = Counter(
            "shop_requests", "Requests served, by path and status", ["path", "status"], registry=self.metrics
        )
        self.latency = Histogram(
            "shop_request_duration_seconds",
            "Time to serve a request",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.metrics,
        )
        self.failures = Counter(
            "shop_dependency_failures", "Requests failed by a dependency", ["dependency"], registry=self.metrics
        )

    async def _postgres(self, use: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        try:
            connection = await asyncpg.connect(
                self.postgres_dsn,
                timeout=POSTGRES_CONNECT_SECONDS,
                command_timeout=POSTGRES_STATEMENT_SECONDS,
                server_settings={"application_name": "shop"},
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise DependencyFailed("postgres", _reason(exc)) from None
        try:
            return await use(connection)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DependencyFailed("postgres", _reason(exc)) from None
        finally:
            connection.terminate()

    async def _redis(self, use: Callable[[Redis], Awaitable[Any]]) -> Any:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS * 2):
                return await use(self.redis)
        except Exception as exc:  # every failure of the cache is the cache's, to this shop
            raise DependencyFailed("redis", _reason(exc)) from None

    async def checkout(self) -> dict[str, Any]:
        cart = await self._redis(lambda redis: redis.incr("shop:cart"))

        async def order(connection: asyncpg.Connection) -> Any:
            return await connection.fetchval("INSERT INTO orders (item) VALUES ($1) RETURNING id", f"item-{cart}")

        return {"order_id": await self._postgres(order), "cart": cart}

    async def health(self) -> dict[str, Any]:
        await self._redis(lambda redis: redis.ping())
        await self._postgres(lambda connection: connection.fetchval("SELECT 1"))
        return {"status": "ok"}

    def app(self) -> Starlette:
        def endpoint(path: str, work: Callable[[], Awaitable[dict[str, Any]]]) -> Callable[[Request], Any]:
            async def serve(_: Request) -> Response:
                started = time.perf_counter()
                try:
                    body, status = await work(), 200
                except DependencyFailed as exc:
                    self.failures.labels(exc.dependency).inc()
                    body, status = {"error": str(exc)}, 500
                self.latency.labels(path).observe(time.perf_counter() - started)
                self.requests.labels(path, str(status)).inc()
                return JSONResponse(body, status_code=status)

            return serve

        async def metrics(_: Request) -> Response:
            return Response(generate_latest(self.metrics), media_type=CONTENT_TYPE_LATEST)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await self._postgres(lambda connection: connection.execute(SCHEMA))
            yield
            await self.redis.aclose()

        return Starlette(
            routes=[
                Route("/checkout", endpoint("/checkout", self.checkout)),
                Route("/health", endpoint("/health", self.health)),
                Route("/metrics", metrics),
            ],
            lifespan=lifespan,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="The incident lab's shop service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--postgres-dsn", required=True)
    parser.add_argument("--redis-url", required=True)
    options = parser.parse_args()
    shop = Shop(options.postgres_dsn, options.redis_url)
    uvicorn.run(shop.app(), host=options.host, port=options.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
