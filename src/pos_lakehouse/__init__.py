"""pos_lakehouse: retailer point-of-sale data into a bronze / silver / gold Delta Lake medallion."""

from pos_lakehouse.runtime import configure_allocator

# Before any module of the package imports Polars (see `runtime`).
configure_allocator()
