"""The lineage query dialect: SQL with graph functions, parsed by sqlglot, run on polars."""
