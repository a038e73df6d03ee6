"""Tests of the pool side: EEA work orders, crypto, processor, workloads."""
