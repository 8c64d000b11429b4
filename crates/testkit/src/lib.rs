//! perpcore-testkit (being written).
