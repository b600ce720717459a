"""web of leadscore."""
