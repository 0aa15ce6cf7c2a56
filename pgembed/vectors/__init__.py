"""pgembed.vectors."""
