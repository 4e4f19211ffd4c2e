"""Test helpers: real servers on loopback that play email and SMS providers."""
