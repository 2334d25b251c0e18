"""The page's explain button: one bounded request, answered with the importance track of the window's centre."""

import numpy as np

from serve_helpers import request


def _body(rec, **extra):
    return {
        "dna": {"reference": rec["reference_sequence"], "variant": rec["variant_sequence"]},
        "question": rec["question"],
        "label": rec["answer"],
        **extra,
    }


def test_explain_request_returns_the_importance_of_the_centre(server, session, test_records):
    rec = test_records[0]
    status, _, body = request(server, "POST", "/v1/explain", _body(rec, region=8), timeout=300)
    assert status == 200, body
    assert body["method"] == "ism" and body["region"] == [13, 20] and body["centre"] == 17
    assert [w["name"] for w in body["windows"]] == ["reference", "variant"]
    dna = session.prepare_dna(rec["reference_sequence"], rec["variant_sequence"], 10_000)
    want = session.explain(dna, rec["question"], label=rec["answer"], method="ism", region=8)
    assert body["windows"][1]["bases"] == dna.variant[12:20]
    for w in range(2):
        assert np.allclose(body["windows"][w]["importance"], want.importance[w], atol=1e-5)
    assert max(body["windows"][1]["importance"]) > 0


def test_explain_request_is_bounded_and_errors_name_the_field(server, test_records):
    rec = test_records[0]
    status, _, body = request(server, "POST", "/v1/explain", _body(rec, region=65))
    assert status == 400 and body["error"]["param"] == "region"
    bad = {**rec, "variant_sequence": rec["variant_sequence"][:100] + "X" + rec["variant_sequence"][101:]}
    status, _, body = request(server, "POST", "/v1/explain", _body(bad))
    assert status == 422 and body["error"]["param"] == "dna.variant"
    assert "'X' at position 100" in body["error"]["message"]
    status, _, body = request(server, "POST", "/v1/explain", _body(rec, method="shap"))
    assert status == 400 and body["error"]["param"] == "method"
