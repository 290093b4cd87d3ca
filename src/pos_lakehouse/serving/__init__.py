"""Gold for analysts: the access policy, secure DuckDB views, Unity Catalog SQL and the gold catalog."""
