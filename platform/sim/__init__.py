"""The simulated system: device profiles and tiers, the virtual clock, injected
faults, real-time network emulation, and the cost model of a round.
"""
