"""The wiring of leadscore: the Faust App, settings, topics and records."""
