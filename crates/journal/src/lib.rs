//! perpcore-journal (being written).
