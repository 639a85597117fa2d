//! Support for Sextant's integration tests.
