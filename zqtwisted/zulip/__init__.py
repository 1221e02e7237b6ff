"""Zulip mode: the shipped consumers take Zulip's own events and read Zulip's database.

A Zulip server puts identifiers on its queues and its workers look the rest up in
its PostgreSQL database.  With ``[zulip] database`` set, zqtwisted does the same:

- :mod:`.settings`: the ``[zulip]`` configuration section;
- :mod:`.urls`: realm hosts and URLs, the REST API address (as Zulip builds them);
- :mod:`.pool`: the asynchronous data layer (adbapi over psycopg2) and its deadlines;
- :mod:`.schema`: the tables and columns it reads, checked at start-up;
- :mod:`.webhook_queries`, :mod:`.push_queries`: the named queries, by feature;
- :mod:`.message`, :mod:`.avatar`: Zulip's ``finalize_payload`` and avatar URLs (pure);
- :mod:`.mobile_content`, :mod:`.push_payload`: Zulip's push payloads (pure);
- :mod:`.bouncer`, :mod:`.push_service`: the push bouncer requests of Zulip mode;
- :mod:`.rest`, :mod:`.webhook_service`: outgoing webhooks and replies through Zulip's REST API.
"""
