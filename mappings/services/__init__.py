"""Services that write stages and mappings; one module per concern."""
