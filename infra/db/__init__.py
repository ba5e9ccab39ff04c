"""PostgreSQL through SQLAlchemy 2 Core on asyncpg: tables, engine, unit of work, repositories."""
