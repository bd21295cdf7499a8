"""A revoked token stays revoked when a new token gets its id.

SQLite hands a new row the highest id plus one, so the id of the newest token comes back
after that token is deleted. The hub remembers verified tokens by their hash and id; a
remembered id that now belongs to another token must not let the old secret in, as that
other token's owner (found by the fault tests of issue 14: a server's token, revoked at its
stop, answered as the next server's owner).
"""

from __future__ import annotations

from tests.conftest import client_for, new_token


async def test_revoked_token_does_not_inherit_a_reused_id(hub, api):
    old = await new_token(api, "alice")
    async with client_for(hub, old) as alice:
        assert (await alice.get("/user")).json()["name"] == "alice"  # remembered now
        tokens = (await api.get("/users/alice/tokens")).json()["api_tokens"]
        assert (await api.delete(f"/users/alice/tokens/{tokens[0]['id']}")).status_code == 204
        await new_token(api, "bob")  # with SQLite: the id alice's token had
        r = await alice.get("/user")
        assert r.status_code == 403, r.text
