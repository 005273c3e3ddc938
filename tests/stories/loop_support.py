"""What the loop's stories share: the platform as a user has it after a first run of the pipeline (real
Redis, MLflow and parquet in a temporary home), and the Dagster daemon's two halves on a real instance:
a sensor's tick and the automation conditions' evaluation, each followed by the runs they ask for,
launched the way the daemon launches them (the job, the partition and the tags of the request)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import dagster as dg
import redis

from core.contracts import RedisKeys
from core.model_registry import ModelRegistry
from core.settings import Settings
from core.tables import OfflineStore
from pipelines.automation.jobs import everything_job
from pipelines.definitions import build_defs, resources_from

CLIENT_KEY = "story-client-key-0123456789"


@dataclass
class Loop:
    """A code location and its instance, driven tick by tick."""

    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    automation_cursor: object | None = None
    runs: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    @classmethod
    def first_run(cls, settings: Settings) -> Loop:
        """Everything materialized once (what `echotune pipeline` runs): a champion published."""
        loop = cls(settings, build_defs(settings), dg.DagsterInstance.ephemeral())
        assert loop.defs.resolve_job_def(everything_job.name).execute_in_process(instance=loop.instance).success
        assert not list(loop.automate())  # the daemon's automation sensor ticks from here on: nothing to do yet
        return loop

    # --- the stores, as the user's tools see them --------------------------------------------------
    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url)

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.settings.redis_prefix)

    @property
    def store(self) -> OfflineStore:
        return OfflineStore(self.settings.layout.tables)

    @property
    def registry(self) -> ModelRegistry:
        s = self.settings
        return ModelRegistry.from_settings(s)

    # --- the daemon ------------------------------------------------------------------------------
    def tick(self, sensor_name: str, cursor: str | None = None):
        """One evaluation of a sensor: what it asks for (``run_requests``) or why not (``skip_message``)."""
        sensor = next(s for s in self.defs.sensors if s.name == sensor_name)
        with dg.build_sensor_context(
            instance=self.instance, resources=resources_from(self.settings), cursor=cursor, definitions=self.defs
        ) as context:
            return sensor.evaluate_tick(context)

    def launch(self, request: dg.RunRequest, job_name: str) -> dg.ExecuteInProcessResult:
        """The run a request asks for, as the daemon starts it; it must succeed."""
        result = self.defs.resolve_job_def(job_name).execute_in_process(
            instance=self.instance, partition_key=request.partition_key, tags=request.tags, raise_on_error=False
        )
        assert result.success, f"{job_name} run failed"
        self.runs.append(result)
        return result

    def automate(self) -> Iterator[tuple[dg.AssetKey, dg.ExecuteInProcessResult]]:
        """One evaluation of the automation conditions (the ``asset_automation`` sensor's tick), then a
        run of each asset it requested."""
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.automation_cursor
        )
        self.automation_cursor = result.cursor
        for key in sorted(
            {r.key for r in result.results if isinstance(r.key, dg.AssetKey)}, key=lambda k: k.to_user_string()
        ):
            if result.get_num_requested(key):
                run = dg.materialize(
                    self.defs.assets,
                    selection=[key],
                    resources=resources_from(self.settings),
                    instance=self.instance,
                    tags={"dagster/from_automation_condition": "true"},
                )
                assert run.success, f"the run the automation condition of {key.to_user_string()} asked for failed"
                yield key, run
