//! Sealed-model file format (in progress).
