"""The federation: client sampling and seeds, round protocols (who is aggregated,
when a round ends) and aggregation rules.
"""
