"""The farm at a glance: ``python -m cluster status`` and its ``--json`` (docs/operations.md)."""
