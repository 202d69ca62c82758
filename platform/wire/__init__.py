"""What crosses between client and server, and what it costs: the boundary `Link`
(bytes per kind of traffic), the codecs, and FLOP counting.
"""
