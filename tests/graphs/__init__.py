"""Graphs that the command-line tests load by locator, each a small shape of trouble."""
