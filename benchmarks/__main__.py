"""``python -m benchmarks [bench.key=value ...]``."""

from benchmarks.run import main

main()
