"""API keys kept in a database (SQLAlchemy; SQLite by default, PostgreSQL by URL)."""
