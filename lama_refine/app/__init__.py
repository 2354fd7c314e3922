"""The entry points: `lama-refine` (cli, with its command-line checks in usage), the Python API (api),
`lama-refine-eval` (evaluate) and `lama-refine-download` (download); the progress bars of the CLI
and the API (progress).
"""
