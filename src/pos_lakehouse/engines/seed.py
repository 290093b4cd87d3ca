"""The xxhash64 seed of surrogate keys, in a module of its own so either engine's edge reads it without importing `engines`."""

# Spark's `xxhash64` has it built in; the Polars edge and the scalar `transform.keys.surrogate_key`
# pass it, so both engines hash alike.
SEED = 42
