"""Boards: the database of boards we know (shipped data) and what is plugged in right now."""
