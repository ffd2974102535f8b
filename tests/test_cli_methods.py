"""``flowstore methods``: every registered method and engine, with its facts and their source."""
from __future__ import annotations

import json

from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.flow.registry import list_engines, list_families, list_methods


def test_help():
    result = CliRunner().invoke(cli, ["methods", "--help"])
    assert result.exit_code == 0 and "--json" in result.output and "source" in result.output


def test_json_lists_every_method_and_engine_with_a_source():
    result = CliRunner().invoke(cli, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    want = {(m, e) for m in list_methods() + list_families() for e in list_engines(m)}
    assert {(r["method"], r["engine"]) for r in rows} == want
    for r in rows:
        assert r["needs"] and r["devices"] and r["source"], r
    by = {(r["method"], r["engine"]): r for r in rows}
    assert by[("tvl1", "opencv")]["default"] and not by[("tvl1", "torch")]["default"]
    assert by[("ptlflow:NAME", "ptlflow")]["published"]["neuflow2"] == {"ms_per_pair": 12.1, "sintel_clean_epe": 1.27}
    assert "gmflow-things-*.ckpt" == by[("gmflow", "ptlflow")]["checkpoint"]


def test_text_output():
    result = CliRunner().invoke(cli, ["methods"])
    assert result.exit_code == 0
    assert "tvl1 [opencv, default]" in result.output and "ptlflow:neuflow2: 12.1 ms/pair" in result.output


def test_learned_models_with_their_facts_and_one_recommended():
    from flowstore.flow.catalog import LEARNED_MODELS, PTLFLOW_PUBLISHED, RECOMMENDED_LEARNED

    rows = json.loads(CliRunner().invoke(cli, ["methods", "--json"]).output)
    learned = {r["method"]: r for r in rows if r["method"] in LEARNED_MODELS}
    assert sorted(learned) == sorted(LEARNED_MODELS) and all(r["engine"] == "ptlflow" for r in learned.values())
    assert [m for m, r in learned.items() if r["recommended"]] == [RECOMMENDED_LEARNED]
    for name, r in learned.items():
        assert r["checkpoint"].startswith(f"{name}-things-*.ckpt") and r["licence"] and r["paper"]
        assert "pairs/s (batch 1)" in r["cpu"] and "docs/benchmarks.md" in r["source"]
        if name in PTLFLOW_PUBLISHED:
            assert r["speed"] == f"{PTLFLOW_PUBLISHED[name][0]} ms/pair on a GPU"
    assert learned["raft"]["min_side"] == 121 and learned["neuflow2"]["min_side"] is None
    text = CliRunner().invoke(cli, ["methods"]).output
    assert f"{RECOMMENDED_LEARNED} [ptlflow, default, recommended for bulk extraction]" in text
    assert "raft [ptlflow, default]" in text and "frames: both sides >= 121 px" in text
