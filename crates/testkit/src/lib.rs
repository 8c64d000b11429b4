//! perpcore-testkit: test support shared by the crates' tests and benches — a naive
//! reference order book and a naive reference model of accounts and risk for
//! differential tests, seeded command generators and shared fixtures (a BTCUSDT spec;
//! with feature `engine`, an engine harness). Never a
//! dependency of a crate that ships in the binary.

pub mod fixtures;
pub mod gen;
pub mod prop;
pub mod refbook;
pub mod refmodel;
