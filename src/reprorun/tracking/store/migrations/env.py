"""alembic's environment: always run in-process on the connection ``upgrade`` passes."""

from alembic import context

from reprorun.tracking.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
