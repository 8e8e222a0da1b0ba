//! Testbench (work in progress).
