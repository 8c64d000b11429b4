//! perpcore-engine (being written).
