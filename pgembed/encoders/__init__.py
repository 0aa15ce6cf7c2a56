"""pgembed.encoders."""
