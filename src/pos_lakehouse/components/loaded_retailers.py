"""The retailers of a loaded code location: read from its `RetailerPipeline` components, not from their YAML again.

Gold, the serving views and the CLI need every retailer. They take them from the component tree
Dagster loads, so they see exactly the components that build the retailers' own assets (one parse,
one validation, one source), whichever defs folder the tree was loaded from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
from pydantic import Field

from pos_lakehouse.components.retailer_pipeline import RetailerPipeline
from pos_lakehouse.retailer import RetailerSpec


def retailers_path_field(what_is_read: str):
    """The `retailers_path` attribute of a component that reads every retailer (gold, serving views)."""
    return Field(
        default="../retailers",
        description="Defs folder of the retailers' RetailerPipeline components (relative to this file): " + what_is_read,
    )


def _specs(components: Iterable[RetailerPipeline]) -> list[RetailerSpec]:
    # Plain copies in id order, as `RetailerPipeline.build_defs` makes: a caller that adjusts a spec
    # cannot change the component, nor what the next caller reads.
    return sorted((RetailerSpec.model_validate(c.model_dump()) for c in components), key=lambda s: s.retailer_id)


def retailers_in_folder(context: dg.ComponentLoadContext, relative_path: str) -> list[RetailerSpec]:
    """The retailers under a defs folder (`relative_path` from the loading component's own folder), in id order.

    Loading through the context records that the calling component depends on that folder's
    components, so Dagster rebuilds it when they change.
    """
    # normpath, not resolve(): the tree names components by the paths it walked, and following a
    # symlink (uv links installed files into its cache) would name a path the tree does not know.
    folder = Path(os.path.normpath(Path(context.path) / relative_path))
    if not folder.is_dir():
        return []
    defs_root = Path(os.path.normpath(context.defs_module_path))
    if not folder.is_relative_to(defs_root):
        raise ValueError(
            f"retailers_path {relative_path!r} of {context.path} is {folder}, outside the loaded defs folder {defs_root}: "
            "the retailers must be RetailerPipeline components of this code location"
        )
    loaded = context.load_structural_component_at_path(folder)
    components = loaded.iterate_components() if isinstance(loaded, dg.DefsFolderComponent) else [loaded]
    return _specs(c for c in components if isinstance(c, RetailerPipeline))


def retailers_in_tree(tree: dg.ComponentTree) -> list[RetailerSpec]:
    """Every retailer of a whole component tree, in id order (loads only the retailer components)."""
    return _specs(tree.get_all_components(of_type=RetailerPipeline))
