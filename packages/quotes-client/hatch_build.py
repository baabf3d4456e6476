"""
Pin this workspace's own packages to this package's version (hatchling metadata hook).

The three packages are released together under one version (the workspace's
``VERSION`` file), so ``quotes-core`` is required at exactly that version: a
``{version}`` in ``[tool.hatch.metadata.hooks.custom] dependencies`` becomes it.
"""

from __future__ import annotations

from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface


class PinnedDependencies(MetadataHookInterface):
    """Fill ``project.dependencies`` from the hook's list, with ``{version}`` replaced."""

    def update(self, metadata: dict[str, Any]) -> None:
        version = metadata["version"]
        metadata["dependencies"] = [
            requirement.replace("{version}", version) for requirement in self.config["dependencies"]
        ]
