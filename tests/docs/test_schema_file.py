"""The JSON Schema shown in the docs is the one the code generates."""

from __future__ import annotations

import json

from quotes_core import wire_json_schema
from tests.helpers.processes import ROOT


def test_docs_schema_is_current() -> None:
    """docs/quote.schema.json equals wire_json_schema() (regenerate with `make schema`)."""
    committed = json.loads((ROOT / "docs" / "quote.schema.json").read_text())
    assert committed == wire_json_schema(), "stale docs/quote.schema.json: run `make schema`"
