//! Packet codecs: the bytes that cross the network, strict and bounded.

pub mod hb3;
