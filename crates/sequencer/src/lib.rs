//! perpcore-sequencer (being written).
