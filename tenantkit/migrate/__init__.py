"""Migrating the application's schema across the fleet: waves (pure) and the fleet rollout."""
