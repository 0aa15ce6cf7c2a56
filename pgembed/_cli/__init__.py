"""Subcommand groups of the pgembed command line."""
