//! Unit tests of the job client.
