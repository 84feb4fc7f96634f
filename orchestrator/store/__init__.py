"""PostgreSQL adapters: tables, the saga store and the unit of work."""
