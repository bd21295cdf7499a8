"""The scope cache is invalidated by the database session's events alone: a permission
written anywhere (an API endpoint, a page, the lifecycle, a plain session) counts on the
next request, with no call of its own to remember."""

from __future__ import annotations

from sqlalchemy import delete

from courtyard.db import queries
from courtyard.db.models import APIToken, Group, Role
from tests.conftest import client_for, new_token


async def test_a_write_outside_the_api_counts_at_once(hub, api):
    token = await new_token(api, "alice")
    await api.post("/users/bob")
    async with client_for(hub, token) as alice:
        assert (await alice.get("/users/bob")).status_code == 404  # her scopes, now cached
        with hub.session() as db:  # a group with a role that reads users, as a page would
            role = Role(name="reader", description="", scopes=["read:users"], managed_by="api")
            db.add(Group(name="readers", properties={}, users=[queries.get_user(db, "alice")],
                         roles=[role]))
            db.commit()
        assert (await alice.get("/users/bob")).status_code == 200
        with hub.session() as db:  # a statement, not an ORM object: revoked all the same
            db.execute(delete(APIToken).where(APIToken.user_id == queries.get_user(db, "alice").id))
            db.commit()
        assert (await alice.get("/users/bob")).status_code == 403


async def test_scopes_read_before_a_write_commits_are_not_kept(hub, api):
    token = await new_token(api, "alice")
    await api.post("/users/bob")
    async with client_for(hub, token) as alice:
        assert (await alice.get("/users/bob")).status_code == 404
        with hub.session() as db:
            queries.set_admin(db, queries.get_user(db, "alice"), True)
            db.flush()  # written, not committed: other sessions still read her as she was
            # another request computes her scopes now, from the committed rows, and caches them
            assert (await alice.get("/users/bob")).status_code == 404
            db.commit()
        # the commit dropped what was cached in between
        assert (await alice.get("/users/bob")).status_code == 200
