//! Reference model of the RNIC (work in progress).
