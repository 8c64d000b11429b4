//! perpcore-book (being written).
