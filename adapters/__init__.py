"""Adapters for partners that have their own systems; each acts as its partner towards the hub."""
