import httpx


async def test_health_and_login(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    r = await client.get("/api/v1/users/me", headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin"
