//! perpcore-config (being written).
