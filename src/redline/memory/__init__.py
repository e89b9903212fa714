"""What redline learned across runs: SQLite store, principles, step bank, mistakes, exports."""
