"""leadscore benchmarks: `python -m bench` (default sizes, < 10 min) or `python -m bench --quick`.

Everything runs against the real local stack (`devstack.ensure_up()`), one unique topic prefix and
MongoDB database per deployment, workers as `leadscore worker` subprocesses. Results go to
`bench/results/<date>-<commit>.json` and the generated part of `docs/PERFORMANCE.md`. Nothing here
asserts a timing: the numbers are measurements, reported as they come out.
"""
