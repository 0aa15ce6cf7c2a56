"""pgembed.storage."""
