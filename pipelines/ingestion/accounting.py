"""Turning an import's accounting into what the Dagster UI shows: metadata and a blocking check."""

import dagster as dg

from core.ingest.result import ImportResult

REJECTS_CHECK = "rejected_share_within_threshold"


def rejects_check_spec(asset_name: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        REJECTS_CHECK,
        asset=asset_name,
        blocking=True,
        description="Fails the run (and stops downstream assets) when too many rows were rejected.",
    )


def import_metadata(result: ImportResult) -> dict:
    summary = result.summary()
    reasons = summary.pop("reject_reasons")
    meta = {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool)}
    meta["dagster/row_count"] = result.accepted
    if reasons:
        meta["reject_reasons"] = dg.MetadataValue.md("\n".join(f"- {k}: {v}" for k, v in reasons.items()))
    return meta


def import_materialization(
    result: ImportResult, threshold: float, with_check: bool = True, **extra
) -> dg.MaterializeResult:
    checks = []
    if with_check:
        checks.append(
            dg.AssetCheckResult(
                check_name=REJECTS_CHECK,
                passed=result.rejected_share <= threshold,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "rejected": result.rejected,
                    "read": result.read,
                    "rejected_share": result.rejected_share,
                    "threshold": threshold,
                },
            )
        )
    return dg.MaterializeResult(metadata={**import_metadata(result), **extra}, check_results=checks)
