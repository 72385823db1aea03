"""Asset checks, one module per asset group."""
