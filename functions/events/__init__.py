"""Engagement events: source adapters onto the canonical event, and the Firehose transformation Lambda."""
