"""The GPU check script's CPU mode runs every check end to end, so the GPU run is not its first."""

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_cpu_mode_runs_every_check_and_prints_json_and_a_table():
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report_text, table = proc.stdout.split("\n\n| check |")
    report = json.loads(report_text)
    assert set(report["checks"]) == {"kegg_tiny", "encoder_load_tiny", "coverage_tiny"}
    load = report["checks"]["encoder_load_tiny"]["report"]
    assert load["weights_on"] == "cpu" and load["embeddings"] == [1, 256, 64]
    assert all(c["ok"] for c in report["checks"].values())
    kegg = report["checks"]["kegg_tiny"]["report"]
    assert set(kegg["modes"]) == {"a_live_k1_logits_reply", "c_cache_k8_logits_reply"}
    for mode in kegg["modes"].values():
        assert mode["packed"] and mode["padding_fraction"] == 0 and mode["samples_per_s"] > 0 and mode["peak_rss_gib"] > 0
    assert kegg["attention"]["implementation"] == "dnallm_packed" and kegg["llm_dtype"] == "float32"
    coverage = report["checks"]["coverage_tiny"]["report"]
    assert coverage["gradient_checkpointing"] is True and coverage["train"]["windows_per_s"] > 0
    assert table.count("\n| kegg_tiny |") == 2 and "| coverage_tiny | train" in table and "PROBLEM" not in table
    assert report["problems"] == [] and coverage["predict"]["trunk_dtype"] == coverage["train"]["trunk_dtype"] == "float32"
