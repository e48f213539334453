"""SQL sources (``sqlite``, ``postgres``) and the ``postgres`` sink.

``headrace.builtins.sql`` is what their entry points load; asyncpg (the ``postgres`` extra)
is imported only when a pipeline uses a postgres plugin.

Modules: ``_types`` (database types <-> Arrow, key encoding), ``_keyset`` (keyset
pagination shared by both sources), ``_driver`` (the lazy asyncpg import, DSNs, transient
errors), ``_pool`` (the sink's pool with wait metrics), ``_writer`` (statements and the
isolation of bad records), ``_pg_sink``, ``_pg_source``, ``_sqlite_source``.
"""
