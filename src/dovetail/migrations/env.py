"""Alembic environment: runs against the engine handed over in ``config.attributes``.

On SQLite, foreign keys are off while migrations run: a batch migration rebuilds a table (copy, drop,
rename), and with them enforced the drop would cascade to every row that references the table (a
domain's rebuild deleted every mailbox). They are checked once the migrations are done, and back on
before the connection returns to the pool.
"""

from __future__ import annotations

from alembic import context

from dovetail.directory.schema import metadata

engine = context.config.attributes["engine"]
sqlite = engine.dialect.name == "sqlite"
with engine.connect() as connection:
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # outside a transaction, or it does nothing
        connection.commit()
    try:
        with connection.begin():
            context.configure(connection=connection, target_metadata=metadata, render_as_batch=sqlite)
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows whose references are gone: {broken[:5]}")
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
