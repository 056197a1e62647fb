"""Faust side of segstream: the app, topics, tables, agents, web views and CLI."""
