"""The engine is made at the first request, as many apps do (settings read late)."""

import json
import os

from sqlalchemy import create_engine, text

_engine = None


def engine():
    global _engine
    if _engine is None:
        _engine = create_engine(os.environ.get("DATABASE_URL", "sqlite+pysqlite:///:memory:"))
        with _engine.begin() as db:
            db.execute(text("create table items (name text, count integer)"))
            db.execute(text("insert into items values ('cups', 3), ('plates', 5)"))
    return _engine


def app(environ, start_response):
    with engine().connect() as db:
        rows = db.execute(text("select name, count from items order by name")).all()
        version = db.execute(text("select sqlite_version()")).scalar()
    body = json.dumps({"items": [list(r) for r in rows], "sqlite": version,
                       "dialect": engine().dialect.name + "+" + engine().dialect.driver})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
