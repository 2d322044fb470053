//! Hostile layers.
