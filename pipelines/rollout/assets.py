"""The rollout's asset: one look at the running rollout after a drain, the decision carried out
(:mod:`experiments.rollout`), the state as metadata (numbers, so the UI plots them across looks) and
the rollout's report."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from experiments.rollout_report import rollout_summary, write_rollout_report
from pipelines.resources import MlflowResource, OfflineStoreResource, RedisResource, RolloutResource

DECISION_TAG, DECISION_REASON_TAG = "echotune/rollout_decision", "echotune/rollout_reason"


@dg.asset(group_name="serving", kinds={"redis", "mlflow"})
def model_rollout(
    context: dg.AssetExecutionContext,
    store: OfflineStoreResource,
    redis: RedisResource,
    mlflow: MlflowResource,
    rollout: RolloutResource,
) -> dg.MaterializeResult:
    """The candidate against the champion on the stored outcomes of the rollout's listeners (click-through,
    skips, completions) and the API's answers with it (errors, P95): held, stepped up, promoted to
    champion or rolled back, the reason in this run's tags, on the MLflow version and in the report."""
    rollouts = rollout.rollouts(redis, mlflow)
    state = rollouts.current()
    if state is None or not state.running:
        return dg.MaterializeResult(
            metadata={"status": state.status if state else "none", "decision": "none: no rollout is running"}
        )
    # from the day before it started: API hosts stamp events with their own clocks, a little apart
    since = (datetime.fromtimestamp(state.started_at, tz=UTC) - timedelta(days=1)).date().isoformat()
    decision = rollouts.look(store.tables.read_events(since=since))
    state = rollouts.act(decision)
    reason = "; ".join(decision.reasons)
    context.instance.add_run_tags(context.run_id, {DECISION_TAG: decision.action, DECISION_REASON_TAG: reason})
    context.log.info("rollout of version %s: %s (%s)", state.version, decision.action, reason)
    out_dir = store.layout.reports / state.experiment_id
    summary_path, html_path = write_rollout_report(rollout_summary(state, rollouts.decisions()), out_dir)
    if not state.running:  # the final report travels with the version
        mlflow.registry.log_report(state.version, out_dir, f"rollouts/{state.experiment_id}")
    guardrails = {}
    for g in decision.guardrails:
        guardrails |= {
            f"{g.metric}_champion": dg.MetadataValue.float(g.champion),
            f"{g.metric}_candidate": dg.MetadataValue.float(g.candidate),
            f"{g.metric}_harm": dg.MetadataValue.float(g.harm),
            f"{g.metric}_harm_low": dg.MetadataValue.float(g.harm_low),
            f"{g.metric}_harm_high": dg.MetadataValue.float(g.harm_high),
            f"{g.metric}_margin": dg.MetadataValue.float(g.margin),
        }
    health = decision.health
    return dg.MaterializeResult(
        metadata={
            "version": state.version,
            "champion_version": state.champion,
            "experiment": state.experiment_id,
            "decision": decision.action,
            "status": state.status,
            "paused": state.paused,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "share": dg.MetadataValue.float(state.share),
            "users_champion": decision.users.get("champion", 0),
            "users_candidate": decision.users.get("candidate", 0),
            **guardrails,
            "candidate_requests": health.get("requests", 0),
            "candidate_error_rate": dg.MetadataValue.float(float(health.get("error_rate", 0.0))),
            "candidate_p95_ms": dg.MetadataValue.float(float(health.get("p95_ms") or 0.0)),
            "budget_error_rate": dg.MetadataValue.float(float(health.get("max_error_rate", 0.0))),
            "budget_p95_ms": dg.MetadataValue.float(float(health.get("max_p95_ms", 0.0))),
            "report": dg.MetadataValue.path(str(html_path)),
            "summary": dg.MetadataValue.path(str(summary_path)),
        }
    )
