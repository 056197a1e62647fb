"""Event contracts: one schema and one decode function per topic."""
