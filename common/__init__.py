"""Side-neutral helpers used by both paths: configuration loading and retry policy.

Nothing here knows about sensors' levels, events, cameras or the database layout of
either side; the import contracts keep it that way.
"""
