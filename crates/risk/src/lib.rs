//! perpcore-risk (being written).
