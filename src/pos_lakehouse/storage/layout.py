"""Where each medallion table lives under the data root; shared by the Polars and Spark storage."""

from __future__ import annotations


def join_uri(root: str, *parts: str) -> str:
    """`root` and `parts` joined by single slashes (a local path or an object-store URI)."""
    root = root.rstrip("/")
    return "/".join([root, *[p.strip("/") for p in parts if p]])


class MedallionLayout:
    """`<root>/bronze/<retailer>/<table>`, `<root>/silver/<retailer>/<table>`, `<root>/gold/<table>`,
    `<root>/quarantine/<retailer>/...`; the class using it provides `root`."""

    root: str

    def uri(self, layer: str, *parts: str) -> str:
        return join_uri(self.root, layer, *parts)

    def bronze(self, retailer: str, table: str) -> str:
        return self.uri("bronze", retailer, table)

    def silver(self, retailer: str, table: str) -> str:
        return self.uri("silver", retailer, table)

    def gold(self, table: str) -> str:
        return self.uri("gold", table)

    def quarantine(self, retailer: str, *parts: str) -> str:
        return self.uri("quarantine", retailer, *parts)
