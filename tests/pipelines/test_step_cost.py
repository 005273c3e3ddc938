"""Each step's seconds and peak memory in its materialization's metadata (issue 25)."""

import time

import dagster as dg
import numpy as np

from pipelines.step_cost import measured


@dg.asset
@measured
def big_table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    table = np.ones(300 * 2**20 // 8)  # 300 MiB held for a moment
    time.sleep(0.3)
    return dg.MaterializeResult(metadata={"rows": len(table)})


def test_a_measured_asset_reports_its_seconds_and_peak_memory():
    result = dg.materialize([big_table])
    meta = result.asset_materializations_for_node("big_table")[0].metadata
    assert meta["rows"].value == 300 * 2**20 // 8  # the asset's own metadata kept
    assert meta["step_seconds"].value >= 0.3
    assert meta["step_rss_growth_mib"].value >= 250 and meta["step_peak_rss_mib"].value >= 250
