"""Storage access: one class per table, the only code that names its keys."""
