"""The benchmark entry point runs (quick mode) and reports consistent numbers."""

import json

import pytest

from centernet_jax import bench


def test_dcn_quick_benchmark_fields(tmp_path):
    result = bench.run("dcn", quick=True)
    result = json.loads(json.dumps(result))  # what --json writes must be JSON-serialisable
    assert result["what"] == "dcn" and result["quick"] is True
    assert result["device_kind"] and result["backend"]
    rows = result["rows"]
    shapes = sorted({row["shape"] for row in rows})
    assert len(shapes) == len(bench.DCN_QUICK_SHAPES) and len(rows) == 2 * len(shapes)
    for shape in shapes:
        dcn, conv = ({row["layer"]: row for row in rows if row["shape"] == shape}[layer]
                     for layer in ("dcn", "conv"))
        for row in (dcn, conv):
            for field in ("fwd_ms", "fwd_bwd_ms", "fwd_gflop", "fwd_bwd_gflop", "fwd_mbyte",
                          "fwd_bwd_mbyte", "matmul_gflop"):
                assert row[field] > 0, (shape, row["layer"], field)
        assert dcn["fwd_ratio"] == pytest.approx(dcn["fwd_ms"] / conv["fwd_ms"])
        assert dcn["fwd_bwd_ratio"] == pytest.approx(dcn["fwd_bwd_ms"] / conv["fwd_bwd_ms"])
        assert conv["fwd_ratio"] == conv["fwd_bwd_ratio"] == 1.0
        # The DCN does strictly more work than the plain conv (offset conv + sampling).
        assert dcn["fwd_gflop"] > conv["fwd_gflop"]
        assert dcn["matmul_gflop"] > conv["matmul_gflop"]
    table = bench.format_table(rows)
    assert len(table.splitlines()) == len(rows) + 1 and "fwd_bwd_ratio" in table


def test_unknown_benchmark_is_rejected():
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench.run("no-such-benchmark")
