"""The data layer: SQLAlchemy Core tables, queries and the transactional operations of the ledger."""
