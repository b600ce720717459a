"""The pure scoring core of leadscore (SPEC sections 3-5).

Nothing in this package performs I/O or imports Faust, Kafka or MongoDB: it is plain Python that
turns events, rules and a given `now` into lead state and history rows, so it can be tested alone
and exhaustively.
"""
