"""tables of leadscore."""
