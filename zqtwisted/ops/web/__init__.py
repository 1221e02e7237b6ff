"""The web dashboard served on the workers' HTTP endpoint: the page, its JSON API and its actions.

- :mod:`.model`: the queue figures and their history, as plain values (no I/O);
- :mod:`.letters`: how a dead letter is shown (masked, paged), plain values;
- :mod:`.auth`: who may act (the token, cross-site checks), plain functions;
- :mod:`.sampler`: the service that reads the broker and the runners every tick;
- :mod:`.deadletters`: listing, replaying and purging ``{queue}.failed`` on the broker;
- :mod:`.resources`: the twisted.web resources; :mod:`.app` wires them for the root.
"""
