"""bench.py keeps running: its --smoke mode, checked for a complete report (no timing thresholds)."""

from __future__ import annotations

import json

import bench


def test_bench_smoke_writes_a_complete_report(tmp_path, capsys):
    report = bench.main(["--smoke", "--json", str(tmp_path / "b.json")])
    assert json.loads((tmp_path / "b.json").read_text())["size"] == 200
    names = set(report["loaders"])
    assert {"lecture (PIL + ToTensor)", "ImageFolder + ToTensor", "ours (cache on)", "ours (cache off)"} <= names
    for figures in report["loaders"].values():
        assert figures["cold_img_s"] > 0 and figures["warm_img_s"] > 0
    assert set(report["end_to_end_s"]) == {"train.py", "lecture loop"}
    for name in ("ours (cache on)", "ours (cache off)"):  # memory, each measured in a fresh process
        assert len(report["loaders"][name]["rss_after_pass_mib"]) == 3
        assert report["loaders"][name]["peak_growth_mib"] >= 0
    assert "| ours (cache on) |" in capsys.readouterr().out
