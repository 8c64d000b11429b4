//! perpcore-testkit: test support shared by the crates' tests and benches — a naive
//! reference order book and a naive reference model of accounts and risk for
//! differential tests, and seeded command generators. Never a
//! dependency of a crate that ships in the binary.

pub mod gen;
pub mod prop;
pub mod refbook;
pub mod refmodel;
