//! NSM access (in progress).
