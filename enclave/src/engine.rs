//! tract inference engine (in progress).
