"""Core contracts: execution spec/result, the Backend protocol, the Engine, profiling."""
