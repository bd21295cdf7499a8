"""/groups: the seeds' formgrade example, members, properties and errors."""

from __future__ import annotations

PAGE = {"Accept": "application/jupyterhub-pagination+json"}


async def test_formgrade_seed(api):
    await api.post("/users", json={"usernames": ["user1", "user2"]})
    r = await api.post("/groups/formgrade-data301")
    assert r.status_code == 201
    r = await api.post("/groups/formgrade-data301/users", json={"users": ["user1", "user2"]})
    assert r.status_code == 200
    assert r.json() == {"kind": "group", "name": "formgrade-data301", "users": ["user1", "user2"],
                        "properties": {}, "roles": []}
    assert (await api.get("/users/user1")).json()["groups"] == ["formgrade-data301"]
    r = await api.request("DELETE", "/groups/formgrade-data301/users", json={"users": ["user1"]})
    assert r.status_code == 200 and r.json()["users"] == ["user2"]


async def test_group_errors(api):
    assert (await api.get("/groups/nope")).status_code == 404
    await api.post("/groups/g")
    assert (await api.post("/groups/g")).status_code == 409
    r = await api.post("/groups/g/users", json={"users": ["ghost"]})
    assert r.status_code == 400 and "ghost" in r.json()["message"]
    assert (await api.post("/groups/g/users", json={})).status_code == 400
    assert (await api.post("/groups/g/users", json={"users": "x"})).status_code == 400
    assert (await api.post("/groups/g/users", content=b"nope")).status_code == 400
    assert (await api.post("/groups/nope/users", json={"users": []})).status_code == 404
    assert (await api.post("/groups/%20bad", json={})).status_code == 400
    r = await api.post("/groups/h", json={"users": ["ghost"]})
    assert r.status_code == 400
    assert (await api.get("/groups/h")).status_code == 404  # nothing half-written


async def test_bulk_create_list_properties_delete(api):
    await api.post("/users/u1")
    r = await api.post("/groups", json={"groups": ["a", "b"], "users": ["u1"]})
    assert r.status_code == 201 and [g["users"] for g in r.json()] == [["u1"], ["u1"]]
    assert (await api.post("/groups", json={"groups": ["b", "c"]})).status_code == 409
    assert (await api.get("/groups/c")).status_code == 404
    r = await api.get("/groups", headers=PAGE)
    assert [g["name"] for g in r.json()["items"]] == ["a", "b"]
    assert r.json()["_pagination"]["total"] == 2
    r = await api.put("/groups/a/properties", json={"course": "data301", "n": 3})
    assert r.status_code == 200 and r.json()["properties"] == {"course": "data301", "n": 3}
    assert (await api.put("/groups/a/properties", json=[1])).status_code == 400
    assert (await api.delete("/groups/a")).status_code == 204
    assert (await api.delete("/groups/a")).status_code == 404
