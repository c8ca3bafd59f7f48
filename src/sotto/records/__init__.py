"""The records officer's tools: archive verification, opening and export (docs/architecture.md)."""
