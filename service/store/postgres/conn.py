"""PostgreSQL adapter: pooled connections that send a unit's BEGIN with its first statement."""

from __future__ import annotations

from typing import Any, Self

from psycopg import AsyncConnection, AsyncCursor
from psycopg.abc import Params, Query
from psycopg.rows import DictRow


class RelayConn(AsyncConnection[DictRow]):
    """A pooled connection (autocommit: the adapter opens and ends its transactions)."""

    # set by the unit of work that takes the connection: its BEGIN waits for a statement
    begin_pending = False


class RelayCursor(AsyncCursor[Any]):
    """A cursor whose first statement in a unit goes in one round trip with the BEGIN."""

    async def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        """Execute `query`; the first of a unit is pipelined behind its BEGIN."""
        sql: Any = query  # a template (no params) or a query: the base class tells them apart
        conn = self.connection
        if not (isinstance(conn, RelayConn) and conn.begin_pending):
            return await super().execute(sql, params, prepare=prepare, binary=binary)
        conn.begin_pending = False
        # both are sent, then both answers read: the results are the cursor's at the exit,
        # and an error of either is raised here, as it would be without the pipeline
        async with conn.pipeline():
            await conn.execute(b"BEGIN")
            await super().execute(sql, params, prepare=prepare, binary=binary)
        return self
