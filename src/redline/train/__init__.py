"""The lab: making data and weights.

Planted errors, Monte-Carlo step labels, step-labelled records, verifier evaluation, and the
trainers. It sits above `strategies` and `verifiers` (it samples solutions and scores steps
with them); nothing below imports it.
"""
