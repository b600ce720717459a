"""agents of leadscore."""
