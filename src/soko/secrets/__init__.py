"""Secrets (the Secrets Manager subset pull-through cache credentials need), encrypted with the master key."""
