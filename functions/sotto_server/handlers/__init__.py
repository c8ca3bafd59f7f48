"""One module per route: decorators plus one call into logic/."""
