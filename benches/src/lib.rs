//! benchmarks (being written).
