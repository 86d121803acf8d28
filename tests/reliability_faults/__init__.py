"""Reliability proofs for faults: run queue, fault storm, hostile input, secrets/injection."""
