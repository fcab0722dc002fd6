//! AWS adapters (in progress)
