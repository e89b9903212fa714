"""What redline learned across runs: SQLite store, principles, step bank, mistakes, exports.

Importing `redline.memory.providers` registers the `principles`, `boost` and `mistakes`
context providers (the registry does this on first use).
"""
