"""The round loop: the world of a run, the backend protocol and the in-process
reference backend, evaluation, rows, progress, and the loop itself.
"""
