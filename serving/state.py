"""Process-wide state of the API, opened once in the lifespan and reached through ``deps``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import redis
import redis.asyncio as aredis

from echotune.contracts.redis_keys import RedisKeys
from echotune.feedback_stream import APPEND_SCRIPT
from echotune.redis_server import EmbeddedRedis
from echotune.settings import Settings
from echotune.vectorstore import VectorStore
from serving.model_state import ModelCache


@dataclass
class AppState:
    settings: Settings
    keys: RedisKeys
    redis: aredis.Redis
    models: ModelCache
    append_feedback: object  # AsyncScript for APPEND_SCRIPT
    embedded: EmbeddedRedis | None = None

    @classmethod
    async def open(cls, settings: Settings) -> "AppState":
        embedded = None
        url = settings.redis_url
        if not url:  # run standalone: attach to (or start) the project's embedded server
            embedded = EmbeddedRedis(settings.redis_dir)
            url = embedded.start()
        keys = RedisKeys(settings.redis_prefix)
        client = aredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=10)
        sync_url = url

        def store() -> VectorStore:
            return VectorStore(redis.Redis.from_url(sync_url, socket_timeout=10), keys)

        state = cls(settings, keys, client, ModelCache(store), client.register_script(APPEND_SCRIPT), embedded)
        with contextlib.suppress(Exception):
            await state.models.refresh(force=True)
        return state

    async def close(self) -> None:
        await self.redis.aclose()
        if self.embedded is not None:
            self.embedded.stop()

    async def user_state(self, version: str, user_id: str) -> tuple[np.ndarray | None, set[str]]:
        """The user's vector for ``version`` and played track ids, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.user_vector(version, user_id))
            pipe.smembers(self.keys.user_played(user_id))
            raw, played = await pipe.execute()
        vector = None if raw is None else np.frombuffer(raw, dtype=np.float32)
        return vector, {t.decode() for t in played}
