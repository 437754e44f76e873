"""The HTTP service on a real uvicorn server: health, API keys, and the generation record."""

from __future__ import annotations

import httpx

from .conftest import API_KEY, LiveServer


def test_health_and_api_keys(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/v1/whoami").status_code == 401
        assert client.get("/v1/whoami", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/v1/whoami", headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200 and ok.json()["client_name"] == "operator" and "admin" in ok.json()["scopes"]
        assert client.get("/v1/whoami", headers={"X-API-Key": API_KEY}).status_code == 200


def test_unknown_generation_is_404_not_500(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30, headers={"X-API-Key": API_KEY}) as client:
        assert client.get("/v1/generations/nope").status_code == 404
        assert client.get("/v1/generations/nope/video").status_code == 404
        bad = client.post("/v1/generations", json={"prompt": ""})
        assert bad.status_code == 422
