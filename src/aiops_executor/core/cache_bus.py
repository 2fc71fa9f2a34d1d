"""Configuration changes reach every process's ``ConfigCache`` at once, through Redis pub/sub.

Without it a process sees another one's configuration write only when its cached entries expire (the TTL,
60 s by default): a provider switched off on one API process would still be called by workers meanwhile.
Each process subscribes to one channel; a whole-cache invalidation made here is published with this process's
origin id, and every other process drops its entries when it hears one. Pub/sub loses messages while a
subscriber is disconnected, so after reconnecting a process drops its entries once (it may have missed some),
and the TTL stays the bound when Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import redis.asyncio as redis
import structlog

from aiops_executor.core.cache import ConfigCache

logger = structlog.get_logger(__name__)

CHANNEL = "aiops:config-changed"
RECONNECT_SECONDS = 1.0


class ConfigChangeBus:
    def __init__(self, url: str, cache: ConfigCache, *, channel: str = CHANNEL) -> None:
        self.redis = redis.Redis.from_url(url)
        self.cache = cache
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self._listener: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribes (waiting up to a second for it, so that changes made right after are heard)."""
        self.cache.on_change = self._announce
        self._listener = asyncio.create_task(self._listen(), name="config-change-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), RECONNECT_SECONDS)

    def _announce(self) -> None:
        task = asyncio.create_task(self._publish(), name="config-change-publish")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self) -> None:
        try:
            await self.redis.publish(self.channel, self.origin)
        except (redis.RedisError, OSError) as exc:
            logger.warning(
                "could not announce a configuration change; other processes see it within the TTL", error=str(exc)
            )

    async def _listen(self) -> None:
        reconnected = False
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._subscribed.set()
                    if reconnected:
                        self.cache.invalidate_from_elsewhere()  # changes may have been missed meanwhile
                        logger.info("hearing configuration changes again")
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message.get("data")
                        origin = data.decode() if isinstance(data, bytes) else str(data)
                        if origin != self.origin:
                            self.cache.invalidate_from_elsewhere()
            except (redis.RedisError, OSError) as exc:
                if not reconnected:
                    logger.warning("not hearing configuration changes of other processes", error=str(exc))
                reconnected = True
                await asyncio.sleep(RECONNECT_SECONDS)

    async def close(self) -> None:
        self.cache.on_change = None
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self.redis.aclose()
