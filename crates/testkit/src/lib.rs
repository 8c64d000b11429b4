//! perpcore-testkit (being written).

pub mod refbook;
