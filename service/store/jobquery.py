"""The WHERE clause of a jobs listing, shared by both engines (only placeholders and the
metadata expressions differ): every value a parameter, no column name from a request."""

from __future__ import annotations

from typing import Any, Literal

Engine = Literal["sqlite", "postgresql"]
# a metadata filter: the key, and the value it must have as text (None: any value)
MetaFilter = tuple[str, str | None]
MAX_KEY = 64  # as catalog.validate_metadata allows
MAX_VALUE = 200


def check_meta(meta: MetaFilter) -> MetaFilter:
    """The filter itself, or ValueError: a key of 1 to 64 printable characters, no `"` or `\\`.

    The key becomes a JSON path parameter on SQLite (`$."key"`), which cannot quote these."""
    key, value = meta
    if not 0 < len(key) <= MAX_KEY:
        raise ValueError(f"metadata key must be 1 to {MAX_KEY} characters")
    if any(c in '"\\' or not c.isprintable() for c in key):
        raise ValueError('metadata key may not hold ", \\ or control characters')
    if value is not None and len(value) > MAX_VALUE:
        raise ValueError(f"metadata value must be at most {MAX_VALUE} characters")
    return meta


def _meta_sql(engine: Engine, meta: MetaFilter) -> tuple[str, list[Any]]:
    key, value = check_meta(meta)
    if engine == "sqlite":
        path = f'$."{key}"'
        if value is None:
            return "json_type(metadata, ?) IS NOT NULL", [path]
        # a string compares as itself, anything else as its JSON text (1, 2.5, true, null)
        return (
            "(CASE json_type(metadata, ?) WHEN 'text' THEN json_extract(metadata, ?)"
            " WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null'"
            " ELSE CAST(json_extract(metadata, ?) AS TEXT) END) = ?",
            [path, path, path, value],
        )
    if value is None:
        return "jsonb_exists(metadata::jsonb, %s)", [key]
    return (
        "(CASE jsonb_typeof(metadata::jsonb -> %s) WHEN 'string' THEN metadata::jsonb ->> %s"
        " ELSE (metadata::jsonb -> %s)::text END) = %s",
        [key, key, key, value],
    )


def jobs_where(
    engine: Engine,
    *,
    status: str | None,
    model: str | None,
    provider: str | None,
    metadata: MetaFilter | None,
    before: int | None,
) -> tuple[str, list[Any]]:
    """` WHERE ...` (or "") and its parameters for jobs matching every filter given."""
    mark = "?" if engine == "sqlite" else "%s"
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("model", model), ("provider", provider)):
        if value:
            where.append(f"{column} = {mark}")
            params.append(value)
    if metadata is not None:
        sql, more = _meta_sql(engine, metadata)
        where.append(sql)
        params += more
    if before is not None:
        where.append(f"seq < {mark}")
        params.append(before)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def jobs_sql(engine: Engine, where: str) -> str:
    """Jobs newest first under `where`, at most the last parameter's number of them."""
    mark = "?" if engine == "sqlite" else "%s"
    return f"SELECT * FROM jobs{where} ORDER BY seq DESC LIMIT {mark}"  # noqa: S608 - own text


def counts_since_sql(engine: Engine) -> str:
    """Jobs created at or after the parameter, by status (the jobs_created index, 011)."""
    mark = "?" if engine == "sqlite" else "%s"
    return f"SELECT status, count(*) AS n FROM jobs WHERE created_at >= {mark} GROUP BY status"  # noqa: S608
