"""/metrics parsed with prometheus_client's parser; X-Request-ID echoed or minted."""
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def test_metrics_and_request_id(make_app):
    with TestClient(make_app()) as c:
        r = c.get("/sdapi/v1/options", headers={"X-Request-ID": "abc-123"})
        assert r.headers["X-Request-ID"] == "abc-123"
        assert c.get("/v1/images/nope").status_code >= 400
        minted = c.get("/sdapi/v1/options", headers={"X-Request-ID": "bad id\r\nx"})
        assert len(minted.headers["X-Request-ID"]) == 32
        fams = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    got = {(s.labels["shape"], s.labels["status"]): s.value
           for s in fams["sdgate_requests"].samples if s.name == "sdgate_requests_total"}
    assert got[("a1111", "200")] == 2 and any(k[0] == "openai" and k[1] != "200" for k in got)
    assert any(s.name == "sdgate_request_seconds_count" for s in fams["sdgate_request_seconds"].samples)
